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
//
// The Allocator writes Concurrency tenants' batches at once; an operator
// changes that live for every process with subjects.KeyAllocatorSettings
// in subjects.BucketOps (`tms ops workers scale`), each process watching
// the key (allocator_scale.go). Each allocator process also answers
// subjects.SubjectWorkersInfo with its subjects.WorkerInfo, and keeps the
// backlog and dead-letter gauges from its consumers' state
// (allocator_info.go).
package workers
