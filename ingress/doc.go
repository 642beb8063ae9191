// Package ingress is the HTTP edge of tms: the public and internal chi
// routers, strict JSON request decoding, bearer authentication, the JSON
// error format, request logging and metrics, and the HTTP server with its
// timeouts and graceful shutdown.
//
// Handlers do no business logic of their own. They decode and check the
// request, call the tenants package, and map its errors onto HTTP codes in
// one place (errors.go): ingress is the only package that knows HTTP.
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
// Answers follow the contract in API.md. Timestamps are RFC 3339 in UTC,
// to the microsecond. POST /agents answers the whole agent (its
// timestamps too) besides the contract's status, agent_id, name and
// agent_status. Unknown paths and wrong methods get JSON 404 and 405 (with
// Allow) on both listeners; their metrics share the route label
// "unmatched", so probing cannot grow the label set.
package ingress
