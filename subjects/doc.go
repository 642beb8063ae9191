// Package subjects is the one place that names NATS subjects, streams,
// consumers and KV buckets, and defines the wire types that travel on them.
//
// Like the api package of jsm.go, it imports nothing of ours: every other
// package builds names through the constants and small builders here, and a
// tenant or agent id is checked as a subject token before it is ever placed
// into a subject or key.
//
// One file per concept, each with that concept's subject or key names,
// their builders and parsers, its bucket or stream configuration and its
// record type: ids.go (the id rule), tenants.go (the registry), sessions.go,
// agents.go, slots.go (the slot records, ticket ids and slot ids),
// parked.go (records parked while their tenant database is away),
// tickets.go (ticket events, their rules, and the dead letters), eta.go (the ETA responder protocol), api.go
// (the public NATS API) and idempotency.go.
//
// Budget (timing.go) is the timing budget both sides of the ETA protocol
// share: the ingress's timeouts and the bounds derived from them, such as
// the age after which an Idempotency-Key claim is taken over.
package subjects
