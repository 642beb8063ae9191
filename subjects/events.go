package subjects

import "time"

// Ticket lifecycle events on core NATS, one subject per tenant and kind:
// tms.events.<tenant>.<kind>. They are notifications, not a log: core
// NATS delivers them to whoever subscribes at the time, a repeat is
// possible (it carries the same ticket and moves), and one can be lost
// (a subscriber away, or a process that dies between its commit and the
// publish). The tenant database and GET /tickets/{id} stay the truth.
const (
	// EventMoved: feasibility admission or a re-plan moved an accepted
	// ticket to another agent-minute inside its window (MoveEvent). The
	// allocator publishes it once the tenant database row has followed.
	EventMoved = "moved"
	// EventAtRisk: an agent went away and no schedule can keep one of its
	// tickets inside its window (AtRiskEvent); the ticket stays where it
	// was, listed by the at-risk endpoint.
	EventAtRisk = "at_risk"

	eventsPrefix = "tms.events."
	// EventsAll matches every tenant's events.
	EventsAll = eventsPrefix + ">"
)

// EventSubject is the subject of one tenant's events of one kind.
func EventSubject(tenant, kind string) string { return eventsPrefix + mustID(tenant) + "." + kind }

// TenantEvents matches every event of one tenant.
func TenantEvents(tenant string) string { return eventsPrefix + mustID(tenant) + ".*" }

// MoveEvent is the body of an EventMoved event: the ticket, where it is
// now (Agent, SlotTime) and where it was (FromAgent, FromSlotTime), with
// its count of moves so far.
type MoveEvent struct {
	Event        string    `json:"event"` // EventMoved
	Tenant       string    `json:"tenant"`
	Ticket       string    `json:"ticket"`
	Type         string    `json:"type"`
	Agent        string    `json:"agent"`
	SlotTime     time.Time `json:"slot_time"`
	FromAgent    string    `json:"from_agent"`
	FromSlotTime time.Time `json:"from_slot_time"`
	Deadline     time.Time `json:"deadline"`
	Moves        int       `json:"moves"`
}

// AtRiskTicket is a ticket no schedule can keep inside its window: it
// holds a minute of an agent that is no longer available.
type AtRiskTicket struct {
	Ticket   string    `json:"ticket"`
	Type     string    `json:"type"`
	Agent    string    `json:"agent"`
	SlotTime time.Time `json:"slot_time"`
	Deadline time.Time `json:"deadline"`
}

// AtRiskEvent is the body of an EventAtRisk event.
type AtRiskEvent struct {
	Event  string `json:"event"` // EventAtRisk
	Tenant string `json:"tenant"`
	AtRiskTicket
	At time.Time `json:"at"`
}
