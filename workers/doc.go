// Package workers holds the long-running NATS consumers: the ETA responders
// that write each admitted ticket into its agent-minute's key of a slot
// bucket (one durable write: the reservation and the hand-off), and the
// allocator workers that consume the buckets' streams and write the
// tickets into each tenant's database.
//
// The Responder is the only writer of the slot buckets. It keeps one
// calendar per tenant (package workers/calendar) fed by a watch on every
// slot shard bucket, a watch on subjects.BucketAgents and its own writes;
// the calendar proposes the earliest free agent-minute and a KV create (or
// an update checked against the key's newest revision) decides, so any
// number of responders may run in the queue group without booking an
// agent-minute twice.
package workers
