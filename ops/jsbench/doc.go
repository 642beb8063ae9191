// Package jsbench measures what one durable JetStream write costs on this
// machine, for each write shape an admission could take: today's KV Create
// plus work-queue publish plus ack, a single only-if-absent publish to a
// limits-retention stream (synchronous or asynchronous), the same spread
// over N streams, an ADR-50 atomic batch, and the reads (KV Get, direct get,
// watch). The numbers and what they mean are in docs/jetstream-costs.md.
//
// It holds benchmarks only (its _test.go files); nothing imports it. Every
// benchmark starts its own embedded server as `tms serve` does
// (ops/embedded: file store, sync_interval "always") on a loopback port.
// The stream names and subjects of the candidate designs are formatted here,
// not in package subjects, because no production code uses them yet.
package jsbench
