// Package jskit holds the generic JetStream helpers every role shares: the
// one get-or-create of a KV bucket (OpenBucket) and of a stream
// (EnsureStream), safe when processes start together; the feed that keeps
// a KV watch running into a query model (KVFeed) and the stop of a watcher
// that cannot leak (StopWatcher); and the predicates for a lost create or
// compare-and-set (CreateLost, WrongLastSequence).
//
// It is a leaf: it imports nats.go and tms/subjects, nothing else of tms,
// so that tenants, workers, ingress and ops can all use it.
package jskit
