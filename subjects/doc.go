// Package subjects is the one place that names NATS subjects, streams,
// consumers and KV buckets, and defines the wire types that travel on them.
//
// Like the api package of jsm.go, it imports nothing of ours: every other
// package builds names through the constants and small builders here, and a
// tenant or agent id is checked as a subject token before it is ever placed
// into a subject or key.
//
// Budget (timing.go) is the timing budget both sides of the ETA protocol
// share: the ingress's timeouts and the bounds derived from them, such as
// the smallest reconcile grace that cannot free a live reservation.
package subjects
