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
