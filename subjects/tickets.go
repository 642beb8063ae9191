package subjects

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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

// The dead-letter stream.
const (
	// StreamDeadLetters keeps ticket events that can never be written, for
	// an operator: nothing is dropped silently.
	StreamDeadLetters = "TMS_TICKETS_DLQ"
	DeadLettersAll    = "tms.dlq.tickets.>"
)

// NewTicketID is a ticket id as versions before the one-write admission
// made them: "t" and RandomIDChars random characters. Such an id names
// no slot (ParseTicketID refuses it): its ticket is found in its tenant
// database only. New tickets get NewSlotTicketID.
func NewTicketID() string { return NewID("t", RandomIDChars) }

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
		// A dead letter is a slot record and the headers that say why.
		MaxMsgSize: MaxSlotRecordBytes + 4<<10,
	}
}

// Ticket events (what a ticket's slot record stands for: SlotRecord.Event),
// and ticket statuses in the API.
const (
	TicketCreated   = "created"
	TicketCancelled = "cancelled"

	StatusAccepted  = "accepted"  // admitted, not yet in the tenant's database
	StatusAllocated = "allocated" // in the tenant's database
	StatusCancelled = "cancelled"
)

// TicketEvent is a ticket as the allocators write it and the API shows it:
// what a confirmed slot record (created) or a released one (cancelled)
// stands for. A cancel carries every field of the ticket too, so that a
// worker that sees it before the create can still write the (cancelled)
// row.
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
	// Subject and Description are the ticket's optional content
	// (create_ticket, allocate_slot): "" is none. CheckContent bounds
	// them. They are not part of any lifecycle event.
	Subject     string `json:"subject,omitempty"`
	Description string `json:"description,omitempty"`
}

// Limits of a ticket's content (docs/api.md).
const (
	// MaxSubjectRunes bounds a subject, in characters (runes).
	MaxSubjectRunes = 200
	// MaxDescriptionBytes bounds a description, in bytes of UTF-8.
	MaxDescriptionBytes = 10 << 10
)

// ContentError is content CheckContent refuses: Field is "subject" or
// "description", Reason says why (for an API message).
type ContentError struct{ Field, Reason string }

func (e *ContentError) Error() string { return e.Field + " " + e.Reason }

// CheckContent reports a subject or description no ticket may carry: not
// valid UTF-8, a subject longer than MaxSubjectRunes characters or with
// any control character (it is one line), a description longer than
// MaxDescriptionBytes bytes or with a control character other than \n,
// \r and \t. The error is a *ContentError. Empty strings are no content
// and pass.
func CheckContent(subject, description string) error {
	switch {
	case !utf8.ValidString(subject):
		return &ContentError{"subject", "must be valid UTF-8"}
	case utf8.RuneCountInString(subject) > MaxSubjectRunes:
		return &ContentError{"subject", fmt.Sprintf("must be at most %d characters (got %d)", MaxSubjectRunes,
			utf8.RuneCountInString(subject))}
	case strings.IndexFunc(subject, unicode.IsControl) >= 0:
		return &ContentError{"subject", "must not contain control characters (it is one line)"}
	case !utf8.ValidString(description):
		return &ContentError{"description", "must be valid UTF-8"}
	case len(description) > MaxDescriptionBytes:
		return &ContentError{"description", fmt.Sprintf("must be at most %d bytes of UTF-8 (10 KiB; got %d)",
			MaxDescriptionBytes, len(description))}
	case strings.IndexFunc(description, descriptionControl) >= 0:
		return &ContentError{"description", `must not contain control characters other than \n, \r and \t`}
	}
	return nil
}

// descriptionControl is a control character a description refuses.
func descriptionControl(r rune) bool {
	return unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t'
}

// ErrInvalidEvent reports a ticket event that does not decode, or breaks
// a rule of TicketEvent.Check or TicketEvent.CheckRow.
var ErrInvalidEvent = errors.New("invalid ticket event")

// TicketEventCheck says how much DecodeSlotRecord requires of a record:
// the worker that writes it requires everything, a reader that only looks
// at a ticket's record requires only that it is that slot's.
type TicketEventCheck int

const (
	// CheckWritable decodes strictly (at most MaxSlotRecordBytes, no
	// unknown member, nothing after the object) and applies every rule
	// of TicketEvent.Check: what the allocator requires before it writes
	// a record's ticket to a tenant database or dead-letters it.
	CheckWritable TicketEventCheck = iota
	// CheckNames decodes as encoding/json does by default (unknown
	// members ignored) and requires only that the record names its key's
	// slot: what the readers of a ticket's record require (the ingress's
	// get and cancel, the responders' calendars).
	CheckNames
)

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
// (docs/api.md), a deadline of created_at + the SLA, no cancelled_at
// on a created event, and content CheckContent accepts. An event Check
// accepts passes CheckRow.
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
	if err := CheckContent(ev.Subject, ev.Description); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return nil
}

// CheckRow reports an event that no database write may accept, whatever
// its subject and whether or not it holds together: valid ticket and
// agent ids, a whole-minute slot, created_at and deadline set, a known
// type, content CheckContent accepts. Package tenants applies it to every event it writes; the
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
	if err := CheckContent(ev.Subject, ev.Description); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return nil
}

// wholeMinute reports a set instant on a minute boundary.
func wholeMinute(t time.Time) bool { return !t.IsZero() && t.Equal(t.Truncate(time.Minute)) }
