// Package workers holds the long-running NATS consumers: the ETA responders
// that reserve agent-minutes in the slot buckets, and the allocator workers
// that write accepted tickets into each tenant's database.
//
// The Responder is the only writer of the slot buckets. It keeps one
// calendar per tenant (package workers/calendar) fed by a watch on every
// slot shard bucket, a watch on subjects.BucketAgents and its own writes;
// the calendar proposes the earliest free agent-minute and an only-if-absent
// KV create decides, so any number of responders may run in the queue
// group without booking an agent-minute twice.
package workers
