// Package ingress is the edge of tms: the public and internal chi routers,
// the public NATS API, strict JSON request decoding, bearer authentication,
// the JSON error format, request logging and metrics, and the HTTP server
// with its timeouts and graceful shutdown.
//
// Handlers do no business logic of their own. They decode and check the
// request, call the tenants or admission package, and map its errors onto
// HTTP codes in one place (errors.go): ingress is the only package that
// knows HTTP.
//
// The middleware is one concern per file: accesslog.go (observe, the
// outermost: one log line per request, recorded in the request metrics
// of metrics.go), recoverer.go (a panic is a logged JSON 500), auth.go
// (the bearer session), ownership.go (a body's client_id must be the
// session's tenant) and admissions.go (countAdmissions, around
// create_ticket's authentication: tms_admissions_total, which the NATS API
// counts too). The NATS API (natsapi.go) counts and logs its requests as
// observe does HTTP's.
//
// Every error answer has the form
//
//	{"status":"error","error":"<machine_code>","message":"<human text>"}
//
// where the message names the offending field. Request bodies are decoded
// strictly: exactly one JSON object of at most 64 KiB, keys matched
// case-sensitively, unknown and duplicate keys refused, values of the wrong
// type refused with the field named (see decode.go).
//
// Answers follow the contract in docs/api.md. Timestamps are RFC 3339 in UTC,
// to the microsecond. POST /agents answers the whole agent (its
// timestamps too) besides the contract's status, agent_id, name and
// agent_status. Unknown paths and wrong methods get JSON 404 and 405 (with
// Allow) on both listeners; their metrics share the route label
// "unmatched", so probing cannot grow the label set.
//
// # Tickets
//
// Ticket admission is one transport-agnostic service, package
// ingress/admission, built once per process (Config.Admission) and called
// by the HTTP handlers (tickets_http.go) and the NATS API (natsapi.go)
// through the same ticket operations (tickets.go), so they answer alike:
// each transport decodes the request, resolves its tenant once (the
// session's, the internal body's client_id, the NATS subject's) and maps
// admission's domain results and errors onto status codes (errors.go).
// Admission passes the process's Overload as its gate. It never writes a
// slot: it asks the tenant's ETA responders (subjects.ETA(tenant):
// reserve, hold, confirm, release, capacity, replan, at_risk; no answer
// within admission's ETATimeout is 503 with Retry-After). The
// responder's write of a ticket's slot record is the ticket's one
// durable write and its hand-off: the allocator workers read the slot
// buckets' streams and write the tenant's database. Ticket ids name
// their first slot (subjects.NewSlotTicketID, from a nonce admission
// picks).
//
//   - create_ticket asks reserve and answers 201 from its reply. A
//     reserve whose outcome is unknown (no reply) is followed by a
//     release of its nonce's ticket, and the answer is 503, never 201.
//   - cancel_ticket asks release: the ticket's released record frees the
//     slot for the very next create and is the cancel the allocators
//     apply. A ticket of an earlier version (an id naming no slot) is
//     cancelled in its tenant database directly.
//   - GET /tickets/{id} reads the ticket's newest slot record (walking
//     back through the key's history if its minute was taken again) and
//     the tenant database (tenants.TicketLookup): accepted (admitted, not
//     yet written), allocated, or cancelled. Another tenant's ticket is
//     404 like a ticket that does not exist.
//   - validate_eta and allocate_slot, on the internal listener only, are
//     the two-phase form: a hold that expires, then a ticket whose
//     created_at is the hold's instant.
//
// Feasibility admission (feasible.go): a ticket's slot is the current
// plan, and the responders may move accepted tickets inside their
// windows. A refused create_ticket's 409 adds "fits" (the types the
// reserve's refusal says would fit now). GET /capacity asks capacity (what
// each type could admit now, changing nothing) and GET /tickets/at-risk
// asks at_risk; a static route, it is never taken for a ticket id. A
// PATCH /agents/{id} that makes an agent unavailable asks replan after
// the agent write, with its revision, and adds "replan" to its 200: the
// counts, or why the re-plan could not be confirmed and how to retry it;
// the agent change stands either way.
//
// Idempotency-Key (admission/idempotency.go; the header is read in
// idempotency.go) claims the key with a KV create of a pending record that
// fixes the ticket id's nonce, and replaces it with the 201's ticket (24 h
// TTL) or forgets it after a 409 or 503: a rejection is not remembered. A
// twin in flight is waited for, briefly. A twin whose claim is older than
// the takeover bound (about 31 s with the default ETA timeout) is presumed
// dead and taken over: the retry asks reserve with Takeover and the twin's
// nonce, which gives the key exactly one ticket, the twin's or a new
// admission.
//
// # The NATS API
//
// NATSAPI serves tms.api.<tenant>.<op> (subjects.API) for services that
// publish directly, as the queue group subjects.QueueAPI: ops
// create_ticket, cancel_ticket, get_ticket ({"ticket_id"}), get_capacity
// and get_at_risk ({} or {"client_id"}), validate_eta and allocate_slot,
// with the HTTP bodies, an Idempotency-Key NATS header,
// and the HTTP answer's JSON object plus "code" (the HTTP status). A body
// whose client_id is not the subject's tenant is 403.
//
// There is no bearer token on this path: the NATS server's authorization
// is the boundary. Give each calling service a NATS account or user whose
// publish permissions allow only tms.api.<its tenant>.> (and the inbox for
// replies); anyone who may publish on tms.api.<tenant>.> acts as that
// tenant, and validate_eta and allocate_slot, internal on HTTP, are
// reachable here to the same holders.
//
// # Overload
//
// Ingress sheds load rather than let queues grow (overload.go; docs/api.md:
// 503, or 429 for a tenant over its share, with Retry-After, never a
// hang), and never turns away the ordinary use of one client. One
// Overload per process, shared by both routers and the NATS API, holds:
// the fair-share admission limiter (fairshare.go: at most MaxInFlight
// admissions, 503 overloaded past it; while the process shows a standing
// queue, the tenants over their max-min fair share of admissions get 429
// rate_limited, a tenant alone never); an optional per-tenant token bucket
// (ratelimit.go, off by default); for create_account and login, which run argon2id and
// CREATE DATABASE, bounded concurrency with a short first-come queue (gate.go: 503
// overloaded once the wait is over), failed attempts counted per client
// address and per client_id (slowed, then locked out: 429), and a
// generous per-address bucket for create_account; and a bound on the
// allocators' backlog (the slot records their consumers have not read),
// sampled at most every 250 ms (backlog.go), past which new
// admissions (create_ticket, validate_eta) are 503 with Retry-After 5
// while cancel and GET go on. A NATS API request that finds every handler
// busy is 503 at once. NATS replies carry Retry-After as a NATS header.
// Refusals are counted in tms_ingress_rate_limited_total{limit} and
// tms_ingress_shed_total{reason}.
package ingress
