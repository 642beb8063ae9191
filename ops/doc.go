// Package ops holds what an operator of tms relies on and every command
// shares: logger setup, the Prometheus registry, the NATS connection (with
// the server version and JetStream checks), the start-up wait for NATS
// (Waiter), readiness and its background probes, the data dir lock, and
// the embedded servers (ops/embedded) and shared test helpers
// (ops/testkit).
package ops
