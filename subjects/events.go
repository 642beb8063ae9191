package subjects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Ticket lifecycle events on core NATS, one subject per tenant and kind:
// tms.events.<tenant>.<kind>. They are notifications, not a log: core
// NATS delivers them to whoever subscribes at the time, a repeat is
// possible (it carries the same ticket and moves), and one can be lost
// (a subscriber away, or a process that dies between its commit and the
// publish). The tenant database and GET /tickets/{id} stay the truth.
//
// A ticket's life: accepted (its reservation written in the slot
// buckets, the 201 of its create), then allocated (its row committed in
// the tenant database), possibly moved (feasibility admission or a
// re-plan) or at risk (its agent gone), and cancelled (the cancel
// committed in the tenant database). Each kind has its body type below;
// DecodeEvent reads any of them strictly.
const (
	// EventAccepted: a new ticket's reservation was written (AcceptedEvent),
	// by the ETA responder right after the record, whichever way the
	// ticket came (HTTP, the NATS API, a hold confirmed). Not sent again
	// for a move.
	EventAccepted = "accepted"
	// EventAllocated: the allocator committed the ticket's row in the
	// tenant database (AllocatedEvent); sent after the commit.
	EventAllocated = "allocated"
	// EventCancelled: the allocator committed the ticket's cancel in the
	// tenant database (CancelledEvent); sent after the commit, not when
	// the cancel is answered, so that a subscriber that sees it finds the
	// row cancelled.
	EventCancelled = "cancelled"
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

	// MaxEventBytes is the largest event body DecodeEvent reads; tms's
	// own are a few hundred bytes.
	MaxEventBytes = 4096
)

// EventKinds are the kinds of events tms publishes, in a ticket's
// lifecycle order (the label values of tms_events_publish_failed_total).
var EventKinds = []string{EventAccepted, EventAllocated, EventMoved, EventAtRisk, EventCancelled}

// ErrInvalidEventBody reports an event subject or body that does not
// decode or breaks a rule of DecodeEvent.
var ErrInvalidEventBody = errors.New("invalid event")

// EventSubject is the subject of one tenant's events of one kind.
func EventSubject(tenant, kind string) string { return eventsPrefix + mustID(tenant) + "." + kind }

// TenantEvents matches every event of one tenant.
func TenantEvents(tenant string) string { return eventsPrefix + mustID(tenant) + ".*" }

// TenantEventsExport is what an operator exports from the tms account to
// a tenant's account (and what the tenant may subscribe to): every event
// of that tenant, tms.events.<tenant>.>.
func TenantEventsExport(tenant string) string { return eventsPrefix + mustID(tenant) + ".>" }

// ParseEventSubject splits an event subject into its tenant and kind,
// refusing anything else (a kind tms does not publish included).
func ParseEventSubject(subject string) (tenant, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, eventsPrefix)
	if ok {
		tenant, kind, ok = strings.Cut(rest, ".")
	}
	if !ok || ValidID(tenant) != nil || !knownKind(kind) {
		return "", "", fmt.Errorf("%w: subject %q", ErrInvalidEventBody, subject)
	}
	return tenant, kind, nil
}

func knownKind(kind string) bool {
	for _, k := range EventKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// LifecycleEvent is what every event of a ticket's life (accepted,
// allocated, cancelled) says of it: the ticket where its reservation put
// it, as its create answered and its row holds it.
type LifecycleEvent struct {
	Event     string    `json:"event"` // its kind: EventAccepted, ...
	Tenant    string    `json:"tenant"`
	Ticket    string    `json:"ticket"`
	Type      string    `json:"type"`
	Agent     string    `json:"agent"`
	SlotTime  time.Time `json:"slot_time"`
	Deadline  time.Time `json:"deadline"`
	CreatedAt time.Time `json:"created_at"`
}

// AcceptedEvent is the body of an EventAccepted event: the new ticket
// where its reservation put it.
type AcceptedEvent struct{ LifecycleEvent }

// AllocatedEvent is the body of an EventAllocated event: the ticket's row
// as the allocator committed it.
type AllocatedEvent struct{ LifecycleEvent }

// CancelledEvent is the body of an EventCancelled event: the ticket, the
// minute it gave back, and when it was cancelled.
type CancelledEvent struct {
	LifecycleEvent
	CancelledAt time.Time `json:"cancelled_at"`
}

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

// DecodeEvent reads an event received on subject: the body of its kind
// (AcceptedEvent, AllocatedEvent, CancelledEvent, MoveEvent or
// AtRiskEvent, as a value), decoded strictly (at most MaxEventBytes, no
// unknown member, nothing after the object) and checked: its event and
// tenant those of the subject, valid ticket and agent ids, a known type,
// the instants set. Anyone allowed to publish on the subject can send
// anything; every refusal wraps ErrInvalidEventBody.
func DecodeEvent(subject string, data []byte) (any, error) {
	tenant, kind, err := ParseEventSubject(subject)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxEventBytes {
		return nil, fmt.Errorf("%w: body of %d bytes, at most %d", ErrInvalidEventBody, len(data), MaxEventBytes)
	}
	var (
		body                           any
		event, tenantOf, ticket, agent string
		tt                             string
		times                          []time.Time
	)
	// life is the part every lifecycle event has, once decoded.
	var life *LifecycleEvent
	switch kind {
	case EventAccepted:
		var ev AcceptedEvent
		if err := decodeStrict(data, &ev); err != nil {
			return nil, err
		}
		body, life = ev, &ev.LifecycleEvent
	case EventAllocated:
		var ev AllocatedEvent
		if err := decodeStrict(data, &ev); err != nil {
			return nil, err
		}
		body, life = ev, &ev.LifecycleEvent
	case EventCancelled:
		var ev CancelledEvent
		if err := decodeStrict(data, &ev); err != nil {
			return nil, err
		}
		body, life = ev, &ev.LifecycleEvent
		times = []time.Time{ev.CancelledAt}
	case EventMoved:
		var ev MoveEvent
		if err := decodeStrict(data, &ev); err != nil {
			return nil, err
		}
		if ev.Moves < 1 {
			return nil, fmt.Errorf("%w: moves %d", ErrInvalidEventBody, ev.Moves)
		}
		if err := ValidID(ev.FromAgent); err != nil {
			return nil, fmt.Errorf("%w: from_agent: %v", ErrInvalidEventBody, err)
		}
		body, event, tenantOf = ev, ev.Event, ev.Tenant
		ticket, agent, tt = ev.Ticket, ev.Agent, ev.Type
		times = []time.Time{ev.SlotTime, ev.FromSlotTime, ev.Deadline}
	default: // EventAtRisk
		var ev AtRiskEvent
		if err := decodeStrict(data, &ev); err != nil {
			return nil, err
		}
		body, event, tenantOf = ev, ev.Event, ev.Tenant
		ticket, agent, tt, times = ev.Ticket, ev.Agent, ev.Type, []time.Time{ev.SlotTime, ev.Deadline, ev.At}
	}
	if life != nil {
		event, tenantOf, ticket, agent, tt = life.Event, life.Tenant, life.Ticket, life.Agent, life.Type
		times = append(times, life.SlotTime, life.Deadline, life.CreatedAt)
	}
	switch {
	case event != kind:
		return nil, fmt.Errorf("%w: body event %q on a %q subject", ErrInvalidEventBody, event, kind)
	case tenantOf != tenant:
		return nil, fmt.Errorf("%w: body tenant %q differs from the subject's %q", ErrInvalidEventBody, tenantOf, tenant)
	}
	if err := ValidID(ticket); err != nil {
		return nil, fmt.Errorf("%w: ticket: %v", ErrInvalidEventBody, err)
	}
	if err := ValidID(agent); err != nil {
		return nil, fmt.Errorf("%w: agent: %v", ErrInvalidEventBody, err)
	}
	if _, ok := SLA(tt); !ok {
		return nil, fmt.Errorf("%w: type %q", ErrInvalidEventBody, tt)
	}
	for _, t := range times {
		if t.IsZero() {
			return nil, fmt.Errorf("%w: an instant missing", ErrInvalidEventBody)
		}
	}
	return body, nil
}

// decodeStrict decodes one JSON object into v: no unknown member, nothing
// after it.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: json: %v", ErrInvalidEventBody, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON object", ErrInvalidEventBody)
	}
	return nil
}
