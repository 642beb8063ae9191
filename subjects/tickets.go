package subjects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ticket types, as the API spells them (case-sensitive).
const (
	Gold   = "GOLD"
	Silver = "SILVER"
	Bronze = "BRONZE"
)

// SLA returns the resolution window of a ticket type, and false for
// anything that is not exactly GOLD, SILVER or BRONZE.
func SLA(ticketType string) (time.Duration, bool) {
	switch ticketType {
	case Gold:
		return 2 * time.Hour, true
	case Silver:
		return 4 * time.Hour, true
	case Bronze:
		return 8 * time.Hour, true
	}
	return 0, false
}

// LongestSLA is the longest window of any ticket type: how far ahead an
// agent's slots must be known.
const LongestSLA = 8 * time.Hour

// The TICKETS stream: one subject per ticket under its tenant,
// tms.tickets.<tenant>.<ticket>, so that the ticket's latest event can be
// read back by subject, and one tenant's tickets are tms.tickets.<tenant>.>.
const (
	StreamTickets = "TMS_TICKETS"
	// TicketsAll is the stream's subject filter (one wildcard: a consumer
	// with many filters is slow).
	TicketsAll = "tms.tickets.>"
	// ConsumerAllocators is the durable pull consumer every allocator
	// worker process shares.
	ConsumerAllocators = "allocators"
	// StreamDeadLetters keeps ticket events that can never be written, for
	// an operator: nothing is dropped silently.
	StreamDeadLetters = "TMS_TICKETS_DLQ"
	DeadLettersAll    = "tms.dlq.tickets.>"
)

// NewTicketID is a new ticket id: "t" and RandomIDChars random
// characters.
func NewTicketID() string { return NewID("t", RandomIDChars) }

// TicketSubject is the stream subject of one ticket's events.
func TicketSubject(tenant, ticket string) string {
	return "tms.tickets." + mustID(tenant) + "." + mustID(ticket)
}

// TenantTickets matches every ticket subject of a tenant.
func TenantTickets(tenant string) string { return "tms.tickets." + mustID(tenant) + ".>" }

// ParseTicketSubject splits a stream subject read back from a message.
func ParseTicketSubject(subject string) (tenant, ticket string, err error) {
	const prefix = "tms.tickets."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
	}
	rest := subject[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			tenant, ticket = rest[:i], rest[i+1:]
			if ValidID(tenant) != nil || ValidID(ticket) != nil {
				break
			}
			return tenant, ticket, nil
		}
	}
	return "", "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
}

// DeadLetterSubject is where an unwritable event of a ticket is parked.
func DeadLetterSubject(tenant, ticket string) string {
	return "tms.dlq.tickets." + mustID(tenant) + "." + mustID(ticket)
}

// DeadLetterInvalid parks events whose own subject does not name a valid
// tenant and ticket. It has one token fewer than any DeadLetterSubject, so
// it never collides with a tenant's dead letters.
const DeadLetterInvalid = "tms.dlq.tickets.invalid"

// Headers a dead letter carries besides the original message's own.
const (
	// HeaderDeadLetterReason says why no worker could write the event.
	HeaderDeadLetterReason = "Tms-Dead-Letter-Reason"
	// HeaderOriginalSubject is the TICKETS subject the event came from.
	HeaderOriginalSubject = "Tms-Original-Subject"
	// HeaderOriginalSequence is the event's sequence in the TICKETS stream.
	HeaderOriginalSequence = "Tms-Original-Sequence"
)

// TicketsStreamConfig is the TICKETS stream: accepted tickets and cancels
// on their way to the allocator workers. Work-queue retention keeps a
// message until a worker acks it after its Postgres commit, however long
// that takes, and no longer; the duplicate window makes a re-publish of the
// same ticket id (a retry) a no-op.
func TicketsStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamTickets,
		Description: "tms accepted tickets and cancels, one subject per ticket",
		Subjects:    []string{TicketsAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
		Duplicates:  2 * time.Minute,
		Discard:     jetstream.DiscardNew,
		AllowDirect: true,
		MaxMsgSize:  16 << 10,
	}
}

// DeadLettersStreamConfig keeps ticket events no worker could ever write,
// for 30 days, for an operator to inspect and replay.
func DeadLettersStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamDeadLetters,
		Description: "tms ticket events that could not be written: inspect and replay",
		Subjects:    []string{DeadLettersAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
		MaxAge:      30 * 24 * time.Hour,
		MaxMsgSize:  64 << 10,
	}
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

// MaxTicketEventBytes is the largest ticket event CheckWritable accepts.
const MaxTicketEventBytes = 8 << 10

// ErrInvalidEvent reports a ticket event that does not decode, or breaks
// a rule of TicketEvent.Check or TicketEvent.CheckRow.
var ErrInvalidEvent = errors.New("invalid ticket event")

// TicketEventCheck says how much DecodeTicketEvent requires of an event:
// the worker that writes it requires everything, a reader that only looks
// at a ticket's latest event requires only that it is that ticket's.
type TicketEventCheck int

const (
	// CheckWritable decodes strictly (at most MaxTicketEventBytes, no
	// unknown member, nothing after the object) and applies every rule
	// of TicketEvent.Check: what the allocator requires before it writes
	// an event to a tenant database or dead-letters it.
	CheckWritable TicketEventCheck = iota
	// CheckNames decodes as encoding/json does by default (unknown
	// members ignored) and requires only that the body names its
	// subject's tenant and ticket: what the readers of a ticket's latest
	// event in the stream require (the ingress's get and cancel, the
	// reconciler's verdict on a reservation).
	CheckNames
)

// DecodeTicketEvent is the one validator of a message on a TicketSubject:
// it decodes data and checks the event against subject's tenant and
// ticket and, as check says, against its own invariants. Every refusal,
// a subject that is no ticket subject included, wraps ErrInvalidEvent.
func DecodeTicketEvent(subject string, data []byte, check TicketEventCheck) (TicketEvent, error) {
	var ev TicketEvent
	tenant, ticket, err := ParseTicketSubject(subject)
	if err != nil {
		return ev, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if check == CheckNames {
		if err := json.Unmarshal(data, &ev); err != nil {
			return ev, fmt.Errorf("%w: json: %v", ErrInvalidEvent, err)
		}
		return ev, ev.checkNames(tenant, ticket)
	}
	if len(data) > MaxTicketEventBytes {
		return ev, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidEvent, len(data), MaxTicketEventBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("%w: json: %v", ErrInvalidEvent, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ev, fmt.Errorf("%w: data after the JSON object", ErrInvalidEvent)
	}
	return ev, ev.Check(tenant, ticket)
}

// checkNames requires that the event is ticket's of tenant.
func (ev TicketEvent) checkNames(tenant, ticket string) error {
	switch {
	case ev.Tenant != tenant:
		return fmt.Errorf("%w: body tenant %q differs from the subject's %q", ErrInvalidEvent, ev.Tenant, tenant)
	case ev.Ticket != ticket:
		return fmt.Errorf("%w: body ticket %q differs from the subject's %q", ErrInvalidEvent, ev.Ticket, ticket)
	}
	return nil
}

// Check reports an event that no worker may write as it stands, given the
// tenant and ticket of its subject: it must be a known event of that
// ticket, of a known type, for a valid agent id, created at a known
// instant, with a whole-minute slot inside the SLA window of created_at
// (docs/api.md), a deadline of created_at + the SLA, and no cancelled_at
// on a created event. An event Check accepts passes CheckRow.
func (ev TicketEvent) Check(tenant, ticket string) error {
	sla, ok := SLA(ev.Type)
	names := ev.checkNames(tenant, ticket)
	switch {
	case ev.Event != TicketCreated && ev.Event != TicketCancelled:
		return fmt.Errorf("%w: event %q", ErrInvalidEvent, ev.Event)
	case names != nil:
		return names
	case ValidID(ev.Ticket) != nil:
		return fmt.Errorf("%w: ticket id %q", ErrInvalidEvent, ev.Ticket)
	case !ok:
		return fmt.Errorf("%w: ticket type %q", ErrInvalidEvent, ev.Type)
	case ValidID(ev.Agent) != nil:
		return fmt.Errorf("%w: agent id %q", ErrInvalidEvent, ev.Agent)
	case ev.CreatedAt.IsZero():
		return fmt.Errorf("%w: no created_at", ErrInvalidEvent)
	case !wholeMinute(ev.SlotTime):
		return fmt.Errorf("%w: slot_time %s is not a whole minute", ErrInvalidEvent, ev.SlotTime.Format(time.RFC3339Nano))
	case !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
		return fmt.Errorf("%w: deadline %s is not created_at + %s", ErrInvalidEvent, ev.Deadline.Format(time.RFC3339Nano), sla)
	case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
		return fmt.Errorf("%w: slot_time %s outside the window [%s, %s]", ErrInvalidEvent,
			ev.SlotTime.Format(time.RFC3339), ev.CreatedAt.Format(time.RFC3339Nano), ev.Deadline.Format(time.RFC3339Nano))
	case ev.Event == TicketCreated && ev.CancelledAt != nil:
		return fmt.Errorf("%w: a created event with cancelled_at", ErrInvalidEvent)
	}
	return nil
}

// CheckRow reports an event that no database write may accept, whatever
// its subject and whether or not it holds together: valid ticket and
// agent ids, a whole-minute slot, created_at and deadline set, a known
// type. Package tenants applies it to every event it writes; the
// allocator's Check has required far more before.
func (ev TicketEvent) CheckRow() error {
	switch {
	case ValidID(ev.Ticket) != nil:
		return fmt.Errorf("%w: ticket id %q", ErrInvalidEvent, ev.Ticket)
	case ValidID(ev.Agent) != nil:
		return fmt.Errorf("%w: agent id %q", ErrInvalidEvent, ev.Agent)
	case !wholeMinute(ev.SlotTime):
		return fmt.Errorf("%w: slot_time %s is not a whole minute", ErrInvalidEvent, ev.SlotTime.Format(time.RFC3339Nano))
	case ev.CreatedAt.IsZero() || ev.Deadline.IsZero():
		return fmt.Errorf("%w: missing created_at or deadline", ErrInvalidEvent)
	}
	if _, ok := SLA(ev.Type); !ok {
		return fmt.Errorf("%w: ticket type %q", ErrInvalidEvent, ev.Type)
	}
	return nil
}

// wholeMinute reports a set instant on a minute boundary.
func wholeMinute(t time.Time) bool { return !t.IsZero() && t.Equal(t.Truncate(time.Minute)) }
