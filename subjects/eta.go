package subjects

import (
	"errors"
	"fmt"
	"time"
)

// ETA responders answer request-reply on a subject per tenant, as one
// queue group so that several processes share the load.
const (
	ETAAll   = "tms.eta.*"
	QueueETA = "tms-eta"
)

// ETA is the responder subject of a tenant.
func ETA(tenant string) string { return "tms.eta." + mustID(tenant) }

// ParseETA returns the tenant of an ETA subject.
func ParseETA(subject string) (string, error) {
	const prefix = "tms.eta."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix || ValidID(subject[len(prefix):]) != nil {
		return "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
	}
	return subject[len(prefix):], nil
}

// Operations of the ETA responder protocol (request-reply on ETA(tenant)).
// Only the responders write slot buckets; everything else asks them.
const (
	// ETAReserve admits a new ticket (create_ticket): Tenant, Type,
	// CreatedAt, Nonce; AgentsRev; Subject and Description (optional).
	// The responder writes the ticket's confirmed record into the earliest
	// free slot (the one durable write of an admission) and answers its
	// Ticket id, Agent, SlotTime and Revision. A reserve with Takeover first looks for a ticket of the
	// tenant with that Nonce and answers it if there is one.
	ETAReserve = "reserve"
	// ETAHold makes a pending hold (validate_eta): Tenant, Type,
	// CreatedAt; AgentsRev.
	ETAHold = "hold"
	// ETAConfirm turns a hold into a ticket (allocate_slot): Tenant,
	// Type, SlotID, Subject and Description (optional), Nonce (the new
	// ticket's, so that an asker that gets no reply knows the ticket id to
	// release). The reply names the new Ticket, its Agent, SlotTime,
	// CreatedAt (the hold's) and Revision.
	ETAConfirm = "confirm"
	// ETARelease cancels a ticket and frees its slot (cancel_ticket):
	// Tenant, Ticket, Type, CreatedAt (the ticket's), Agent, SlotTime. The
	// responder writes the released record unless the ticket's slot is
	// released already; repeating it changes nothing.
	ETARelease = "release"
	// ETACapacity asks, changing nothing, how many more tickets of each
	// type the tenant could admit now, by the test a reserve uses:
	// Tenant, CreatedAt (the instant judged from); AgentsRev. The reply's
	// Capacity has one entry per ticket type.
	ETACapacity = "capacity"
	// ETAReplan re-slots the tenant's tickets held by agents that are no
	// longer available onto other agents inside their windows: Tenant,
	// AgentsRev (the agent write that made one unavailable). The reply
	// counts the tickets Moved and lists those AtRisk (no schedule can
	// keep them in their windows). Repeating it moves nothing twice.
	ETAReplan = "replan"
	// ETAAtRisk lists, changing nothing, the tenant's tickets at risk
	// (AtRisk in the reply): Tenant.
	ETAAtRisk = "at_risk"
)

// ETAPing asks a responder only to answer success, touching no bucket: the
// readiness probe of an ingress that some responder serves requests now.
// Its Tenant is PingTenant, on the subject ETA(PingTenant).
const ETAPing = "ping"

// PingTenant is the tenant id of an ETAPing request; no account has it
// (account ids start with "c").
const PingTenant = "ping"

// ETARequest is a request to an ETA responder.
type ETARequest struct {
	Op        string    `json:"op"`
	Tenant    string    `json:"tenant"`
	Type      string    `json:"type,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Ticket    string    `json:"ticket,omitempty"`
	// Nonce (reserve and confirm) is the random part of the new ticket's
	// id (subjects.NewTicketNonce); the responder builds the id from it
	// and the slot (NewSlotTicketID). A release with a Nonce and no Ticket
	// releases the tenant's ticket with that nonce, if there is one: what
	// an asker sends after a reserve that got no reply.
	Nonce string `json:"nonce,omitempty"`
	// Takeover (reserve only): an Idempotency-Key retry that took over a
	// twin presumed dead; the tenant's tickets are searched for Nonce
	// first, and a ticket found is the answer.
	Takeover bool   `json:"takeover,omitempty"`
	SlotID   string `json:"slot_id,omitempty"`
	// Deadline (every op but ping) is when the asker stops waiting for
	// the reply, by its clock: a responder that gets to the request later,
	// or whose write would begin later, writes nothing and answers
	// unavailable. A request that waited in a paused or overloaded
	// responder past its asker's patience thus cannot admit a ticket (or
	// release one) nobody is told of. Zero: none (askers of older
	// versions).
	Deadline time.Time `json:"deadline,omitzero"`
	Agent    string    `json:"agent,omitempty"`
	SlotTime time.Time `json:"slot_time,omitzero"`
	// AgentsRev (reserve, hold, capacity and replan only) is the revision in BucketAgents
	// of the tenant's last agent write the ingress knows of: the
	// responder answers only from a calendar that has applied at least
	// that revision (read-your-writes); 0 or absent: no wait.
	AgentsRev uint64 `json:"agents_rev,omitempty"`
	// Subject and Description (reserve and confirm only) are the new
	// ticket's content, which its confirmed record carries
	// (TicketEvent.Subject); "": none. subjects.CheckContent bounds them.
	Subject     string `json:"subject,omitempty"`
	Description string `json:"description,omitempty"`
}

// Reply codes of the ETA protocol: the Error member of a refusal, the one
// thing responder and asker decide on. The strings are on the wire and
// must not change; a new code needs a new constant, its sentinel and its
// line in etaCodes.
const (
	// Refusals of a request as it stands (ErrETABadRequest); the reply's
	// Field names the offending member where there is one.
	ETACodeInvalidJSON    = "invalid_json"
	ETACodeUnknownField   = "unknown_field"
	ETACodeInvalidField   = "invalid_field"
	ETACodeTenantMismatch = "tenant_mismatch" // body's tenant is not the subject's
	ETACodeBodyTooLarge   = "body_too_large"

	ETACodeTenantNotFound = "client_not_found" // ErrETATenantNotFound
	ETACodeNoSlot         = "sla_unavailable"  // ErrETANoSlot
	ETACodeTypeMismatch   = "type_mismatch"    // ErrETATypeMismatch
	ETACodeHoldGone       = "hold_expired"     // ErrETAHoldGone
	ETACodeUnavailable    = "unavailable"      // ErrETAUnavailable
	// ETACodeNonceReleased: a takeover found the nonce's ticket released
	// (cancelled): the nonce is spent, the asker retries with a fresh one.
	ETACodeNonceReleased = "nonce_released" // ErrETANonceReleased
)

// Errors of the ETA protocol, as ETAReply.Err returns them (wrapped in an
// *ETAError that carries the reply's code, field and message). Askers test
// them with errors.Is.
var (
	// ErrETABadRequest: the responder refused the request as it stands
	// (one of the 400 codes); the asker sent something it should not have.
	ErrETABadRequest = errors.New("eta: request refused as malformed")
	// ErrETATenantNotFound: the request's tenant is not in the registry.
	ErrETATenantNotFound = errors.New("eta: no such tenant")
	// ErrETANoSlot: no free agent-minute inside the ticket's SLA window.
	ErrETANoSlot = errors.New("eta: no free slot in the SLA window")
	// ErrETATypeMismatch: the held slot is outside the SLA window of the
	// confirm's ticket type.
	ErrETATypeMismatch = errors.New("eta: slot outside the SLA window of the ticket type")
	// ErrETAHoldGone: no live hold matches the confirm's slot id.
	ErrETAHoldGone = errors.New("eta: no live hold for that slot id")
	// ErrETAUnavailable: the responder could not answer now (slot store,
	// registry or agents watch); asking again later may succeed.
	ErrETAUnavailable = errors.New("eta: responder unavailable")
	// ErrETANonceReleased: a takeover's nonce names a ticket that was
	// released; a new ticket needs a fresh nonce (the id would repeat).
	ErrETANonceReleased = errors.New("eta: the nonce's ticket was released")
	// ErrETAProtocol: a reply this version does not understand (an
	// unknown code, or no code with a status that is no success). Never
	// taken for a success.
	ErrETAProtocol = errors.New("eta: reply outside the protocol")
)

// etaCodes is the contract: each code's sentinel, and the HTTP status an
// ETAReply carries in Code for it (kept for askers of older versions,
// which decide on Code).
var etaCodes = map[string]struct {
	err    error
	status int
}{
	ETACodeInvalidJSON:    {ErrETABadRequest, 400},
	ETACodeUnknownField:   {ErrETABadRequest, 400},
	ETACodeInvalidField:   {ErrETABadRequest, 400},
	ETACodeTenantMismatch: {ErrETABadRequest, 400},
	ETACodeBodyTooLarge:   {ErrETABadRequest, 400},
	ETACodeTenantNotFound: {ErrETATenantNotFound, 404},
	ETACodeNoSlot:         {ErrETANoSlot, 409},
	ETACodeTypeMismatch:   {ErrETATypeMismatch, 409},
	ETACodeHoldGone:       {ErrETAHoldGone, 410},
	ETACodeUnavailable:    {ErrETAUnavailable, 503},
	ETACodeNonceReleased:  {ErrETANonceReleased, 409},
}

// ETACodes lists every reply code of the protocol, for tests and docs.
func ETACodes() []string {
	return []string{ETACodeInvalidJSON, ETACodeUnknownField, ETACodeInvalidField, ETACodeTenantMismatch,
		ETACodeBodyTooLarge, ETACodeTenantNotFound, ETACodeNoSlot, ETACodeTypeMismatch, ETACodeHoldGone,
		ETACodeUnavailable, ETACodeNonceReleased}
}

// Success statuses of ETAReply.Code: ETACreated for a reserve, ETAOK for
// every other operation.
const (
	ETAOK      = 200
	ETACreated = 201
)

// ETAReply is a responder's answer. Error is its domain code: empty for a
// success, one of the ETACode constants for a refusal; askers decide on it
// through Err. Code is the HTTP status that goes with it (ETAOK or
// ETACreated for a success; 400, 404, 409, 410 or 503 as etaCodes says for
// a refusal): it stays on the wire for askers of older versions and for
// metrics and logs, and says nothing that Error does not.
type ETAReply struct {
	Code          int        `json:"code"`
	Error         string     `json:"error,omitempty"`
	Message       string     `json:"message,omitempty"`
	Field         string     `json:"field,omitempty"`  // a refused request's offending member, if any
	Ticket        string     `json:"ticket,omitempty"` // reserve, confirm: the ticket's id
	Agent         string     `json:"agent,omitempty"`
	SlotTime      time.Time  `json:"slot_time,omitzero"`
	CreatedAt     time.Time  `json:"created_at,omitzero"` // reserve: the ticket's; confirm: the hold's instant
	SlotID        string     `json:"slot_id,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`
	Revision      uint64     `json:"revision,omitempty"` // KV revision of the reservation
	// Moves (reserve): how many accepted tickets were moved to other
	// agent-minutes to admit this one (feasibility admission).
	Moves int `json:"moves,omitempty"`
	// Fits (a reserve refused sla_unavailable): the ticket types that
	// would be admitted now.
	Fits []string `json:"fits,omitempty"`
	// Capacity (capacity): per ticket type, what could be admitted now.
	Capacity []TypeCapacity `json:"capacity,omitempty"`
	// Moved (replan): tickets moved off agents no longer available.
	Moved int `json:"moved,omitempty"`
	// AtRisk (replan, at_risk): tickets no schedule can save.
	AtRisk []AtRiskTicket `json:"at_risk,omitempty"`
}

// TypeCapacity is what a tenant could admit of one ticket type now:
// Available more tickets of Type, the first of them planned at Agent and
// SlotTime (zero when Available is 0) after Moves moves of accepted
// tickets.
type TypeCapacity struct {
	Type      string    `json:"type"`
	Available int       `json:"available"`
	Agent     string    `json:"agent,omitempty"`
	SlotTime  time.Time `json:"slot_time,omitzero"`
	Moves     int       `json:"moves"`
}

// ETARefusal is the reply for a refusal with code (an ETACode constant):
// Code is set from the contract, so a responder never picks a status.
// field may be empty. An unknown code gives a 503 "unavailable" refusal
// instead: a responder bug must not read as something more specific.
func ETARefusal(code, field, message string) ETAReply {
	c, ok := etaCodes[code]
	if !ok {
		code, c = ETACodeUnavailable, etaCodes[ETACodeUnavailable]
	}
	return ETAReply{Code: c.status, Error: code, Field: field, Message: message}
}

// Err is the reply's outcome: nil for a success, else an *ETAError that
// wraps the code's sentinel (ErrETANoSlot, ErrETAHoldGone, ...). A code
// this version does not know, or a reply without a code whose Code is no
// 2xx, wraps ErrETAProtocol: never nil.
func (r ETAReply) Err() error {
	if r.Error == "" {
		if r.Code >= 200 && r.Code < 300 {
			return nil
		}
		return &ETAError{Status: r.Code, Message: r.Message, Field: r.Field, err: ErrETAProtocol}
	}
	sentinel := ErrETAProtocol
	if c, ok := etaCodes[r.Error]; ok {
		sentinel = c.err
	}
	return &ETAError{Code: r.Error, Status: r.Code, Field: r.Field, Message: r.Message, err: sentinel}
}

// ETAError is a refusal of an ETA responder: the reply's code, status,
// field and message, wrapping the code's sentinel.
type ETAError struct {
	Code    string // the reply's Error; "" if it had none
	Status  int    // the reply's Code
	Field   string
	Message string
	err     error
}

func (e *ETAError) Error() string {
	s := e.err.Error()
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *ETAError) Unwrap() error { return e.err }
