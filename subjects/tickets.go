package subjects

import (
	"fmt"
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
