package tenants

import (
	"errors"

	"tms/subjects"
)

// Errors of the tenants package. Callers test them with errors.Is; the
// ingress layer maps them onto HTTP codes.
var (
	// ErrEmailTaken: another tenant already holds the e-mail address
	// (compared case-insensitively).
	ErrEmailTaken = errors.New("email already taken")
	// ErrInvalidCredentials: unknown client id or wrong password; the two
	// are deliberately indistinguishable.
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrTenantNotFound: no tenant with that id.
	ErrTenantNotFound = errors.New("tenant not found")
	// ErrUnauthenticated: a session token that is missing, malformed,
	// unknown, expired or revoked.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrAgentNotFound: no such agent for this tenant (another tenant's
	// agent is reported the same way).
	ErrAgentNotFound = errors.New("agent not found")
	// ErrUnavailable: NATS or Postgres cannot be reached now; it is always
	// wrapped together with the cause.
	ErrUnavailable = errors.New("service unavailable")
	// ErrPostgresRefused: a Postgres server answered but refused the
	// configured role, password or database; a configuration error that
	// waiting does not cure, unlike ErrUnavailable.
	ErrPostgresRefused = errors.New("postgres refused the connection")
)

// FieldError reports a bad input value. Field is the JSON field name
// (client_name, official_email, password, name, agent_status ...).
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Errors of the ticket rows in a tenant's database (Tickets).
var (
	// ErrTicketNotFound: no ticket with that id in the tenant's database.
	ErrTicketNotFound = errors.New("ticket not found")
	// ErrSlotTaken: another live ticket holds the agent-minute; the
	// error is a *SlotConflictError naming that ticket.
	ErrSlotTaken = errors.New("slot taken by another ticket")
	// ErrInvalidTicket: a ticket event that can never be written (bad id,
	// type or slot, or an agent the database does not know). It is
	// subjects.ErrInvalidEvent, what the one validator of ticket events
	// (subjects.TicketEvent.CheckRow here) refuses with.
	ErrInvalidTicket = subjects.ErrInvalidEvent
)

// SlotConflictError reports that the tenant database refused a ticket
// because Ticket, a live ticket, already holds the same agent-minute: the
// last guard against double booking (docs/design.md).
type SlotConflictError struct{ Ticket string }

func (e *SlotConflictError) Error() string {
	return "slot taken by live ticket " + e.Ticket
}

// Is makes errors.Is(err, ErrSlotTaken) true.
func (e *SlotConflictError) Is(target error) bool { return target == ErrSlotTaken }
