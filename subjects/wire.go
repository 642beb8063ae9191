package subjects

import "time"

// TenantRecord is the value stored under TenantKey: the registry's command
// model of one tenant. PasswordHash is a PHC-format argon2id string.
type TenantRecord struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Email        string    `json:"email"`
	PasswordHash string    `json:"password_hash"`
	SubDomain    string    `json:"sub_domain"`
	DBServer     string    `json:"db_server"` // placement: host:port of one --database-url server
	DBName       string    `json:"db_name"`
	CreatedAt    time.Time `json:"created_at"`
}

// Claim is the value stored under EmailKey and SubDomainKey: which tenant
// holds the claim.
type Claim struct {
	Tenant string `json:"tenant"`
}

// SessionRecord is the value stored under SessionKey.
type SessionRecord struct {
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Agent statuses, as stored and as shown in the API.
const (
	AgentAvailable   = "available"
	AgentUnavailable = "unavailable"
)

// AgentRecord is the value stored under AgentKey: what ETA responders need
// to know of an agent. AvailableSince is set while Status is available: the
// agent contributes slots from the first whole minute at or after it.
type AgentRecord struct {
	Tenant         string     `json:"tenant"`
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Status         string     `json:"status"`
	AvailableSince *time.Time `json:"available_since,omitempty"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// Slot reservation states.
const (
	// SlotHeld is validate_eta's pending hold: it carries a key TTL of
	// --hold-ttl and disappears unless allocate_slot confirms it.
	SlotHeld = "held"
	// SlotConfirmed is a reservation backing an accepted ticket. Its key
	// TTL runs to some time after the slot's minute has passed, never
	// shorter: a confirmed reservation does not expire while it matters.
	SlotConfirmed = "confirmed"
)

// SlotRecord is the value stored under SlotKey.
type SlotRecord struct {
	State         string     `json:"state"`
	Ticket        string     `json:"ticket,omitempty"` // set once confirmed
	Type          string     `json:"type"`
	CreatedAt     time.Time  `json:"created_at"` // the instant the SLA window is judged from
	Nonce         string     `json:"nonce,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`
}

// Operations of the ETA responder protocol (request-reply on ETA(tenant)).
// Only the responders write slot buckets; everything else asks them.
const (
	// ETAReserve reserves the earliest free slot for a new ticket
	// (create_ticket): Tenant, Type, CreatedAt, Ticket; AgentsRev.
	ETAReserve = "reserve"
	// ETAHold makes a pending hold (validate_eta): Tenant, Type,
	// CreatedAt; AgentsRev.
	ETAHold = "hold"
	// ETAConfirm turns a hold into a reservation (allocate_slot): Tenant,
	// Type, SlotID, Ticket.
	ETAConfirm = "confirm"
	// ETARelease frees a reservation (cancel, or a publish that failed):
	// Tenant, Ticket, Agent, SlotTime; only if it still belongs to Ticket.
	ETARelease = "release"
)

// ETAPing asks a responder only to answer 200, touching no bucket: the
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
	SlotID    string    `json:"slot_id,omitempty"`
	Agent     string    `json:"agent,omitempty"`
	SlotTime  time.Time `json:"slot_time,omitzero"`
	// AgentsRev (reserve and hold only) is the revision in BucketAgents
	// of the tenant's last agent write the ingress knows of: the
	// responder answers only from a calendar that has applied at least
	// that revision (read-your-writes); 0 or absent: no wait.
	AgentsRev uint64 `json:"agents_rev,omitempty"`
}

// ETAReply is a responder's answer. Code is an HTTP status: 200 ok (201
// for a reservation), 400 bad request, 404 unknown tenant, 409 no slot or
// type does not fit, 410 hold gone, 503 store unavailable.
type ETAReply struct {
	Code          int        `json:"code"`
	Error         string     `json:"error,omitempty"`
	Message       string     `json:"message,omitempty"`
	Agent         string     `json:"agent,omitempty"`
	SlotTime      time.Time  `json:"slot_time,omitzero"`
	CreatedAt     time.Time  `json:"created_at,omitzero"` // confirm: the hold's instant
	SlotID        string     `json:"slot_id,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`
	Revision      uint64     `json:"revision,omitempty"` // KV revision of the reservation
}

// Ticket events on the TICKETS stream, and ticket statuses in the API.
const (
	TicketCreated   = "created"
	TicketCancelled = "cancelled"

	StatusAccepted  = "accepted"  // admitted, not yet in the tenant's database
	StatusAllocated = "allocated" // in the tenant's database
	StatusCancelled = "cancelled"
)

// TicketEvent is the payload of a message on TicketSubject. A cancel
// carries every field of the ticket too, so that a worker that sees it
// before the create can still write the (cancelled) row.
type TicketEvent struct {
	Event       string     `json:"event"` // TicketCreated or TicketCancelled
	Tenant      string     `json:"tenant"`
	Ticket      string     `json:"ticket"`
	Type        string     `json:"type"`
	Agent       string     `json:"agent"`
	SlotTime    time.Time  `json:"slot_time"`
	CreatedAt   time.Time  `json:"created_at"`
	Deadline    time.Time  `json:"deadline"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
}

// Idempotency record states.
const (
	IdempotencyPending = "pending"
	IdempotencyDone    = "done"
)

// IdempotencyRecord is the value stored under IdempotencyKey: the request's
// fingerprint, the ticket id it was given, and, once done, the 201 body.
type IdempotencyRecord struct {
	State    string    `json:"state"`
	BodyHash string    `json:"body_hash"`
	Ticket   string    `json:"ticket"`
	Response []byte    `json:"response,omitempty"`
	Created  time.Time `json:"created"`
}
