package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"tms/subjects"
	"tms/tenants"
)

// The allocator's decisions are made here, apart from their effects: what a
// delivery of the TICKETS stream asks for (decide), what a tenant look-up
// means for it (settleLookup), and what the outcome of its write means
// (settleOutcome). They read plain values and return a decision, which
// settle.go and deadletter.go carry out.

// delivery is one TICKETS message as the decisions see it.
type delivery struct {
	subject   string
	data      []byte
	seq       uint64    // stream sequence
	delivered uint64    // deliveries so far, this one included
	stored    time.Time // when the stream stored it
}

// action is what a decision has the allocator do with a message.
type action int

const (
	// actCreate and actCancel write the event into the tenant's database
	// (ApplyCreated, ApplyCancelled); the outcome decides the rest.
	actCreate action = iota + 1
	actCancel
	// actAck: the event is written (or was already there); the message is
	// acked with the server's confirmation.
	actAck
	// actRedeliver gives the message back to come again after delay.
	actRedeliver
	// actDeadLetter parks the message on the dead-letter stream and
	// terminates it.
	actDeadLetter
)

// String names the action in test failures.
func (a action) String() string {
	switch a {
	case actCreate:
		return "create"
	case actCancel:
		return "cancel"
	case actAck:
		return "ack"
	case actRedeliver:
		return "redeliver"
	case actDeadLetter:
		return "dead-letter"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Dead-letter kinds (label of tms_allocator_dead_lettered_total, and the
// reason the message is terminated with).
const (
	kindInvalid       = "invalid"
	kindUnknownTenant = "unknown_tenant"
	kindDoubleBooking = "double_booking"
	kindError         = "error"
)

// Redelivery reasons (label of tms_allocator_failed_total).
const (
	retryRegistry          = "registry"
	retryUnavailable       = "unavailable"
	retryConflict          = "conflict"
	retryError             = "error"
	retryDeadLetterPublish = "dead_letter_publish"
)

// decision is what becomes of one delivery.
type decision struct {
	action action
	// tenant and ticket are those of the message's subject, "" when the
	// subject names none.
	tenant, ticket string
	// ev is the validated event (actCreate, actCancel, and actAck).
	ev subjects.TicketEvent
	// kind is the dead-letter kind (actDeadLetter) or the redelivery
	// reason (actRedeliver).
	kind string
	// reason is what the dead letter records (actDeadLetter).
	reason string
	// err is what failed (actRedeliver), for the log.
	err error
	// delay is how long the message waits before it comes again
	// (actRedeliver).
	delay time.Duration
	// holder is the live ticket that holds the minute when the tenant
	// database refused a double booking, and tries how often this process
	// has seen that refusal.
	holder string
	tries  int
	// forget ends the count of the message's double bookings.
	forget bool
}

// writes reports whether the decision is to create or cancel.
func (dec decision) writes() bool { return dec.action == actCreate || dec.action == actCancel }

// decide reads a delivery: an event to write, or a dead letter for a
// subject that names no ticket or a body that fails decodeTicketEvent. A
// cancel without cancelled_at is dated by the stream.
func decide(d delivery) decision {
	tenant, ticket, err := subjects.ParseTicketSubject(d.subject)
	if err != nil {
		return deadLetterOf(decision{}, kindInvalid, "subject: "+err.Error())
	}
	dec := decision{tenant: tenant, ticket: ticket}
	ev, err := decodeTicketEvent(d.data, tenant, ticket)
	if err != nil {
		return deadLetterOf(dec, kindInvalid, err.Error())
	}
	dec.ev, dec.action = ev, actCreate
	if ev.Event == subjects.TicketCancelled {
		dec.action = actCancel
		if ev.CancelledAt == nil {
			at := d.stored.UTC()
			dec.ev.CancelledAt = &at
		}
	}
	return dec
}

// settleLookup is what the look-up of the tenant of write, a decision to
// create or cancel, means for it: lookupErr nil keeps write; an unknown
// tenant is dead-lettered; any other failure redelivers the message.
func settleLookup(d delivery, write decision, lookupErr error, backoff func(int) time.Duration) decision {
	switch {
	case errors.Is(lookupErr, tenants.ErrTenantNotFound):
		return deadLetterOf(write, kindUnknownTenant, "unknown tenant "+write.tenant)
	case lookupErr != nil:
		return redeliverOf(d, write, retryRegistry, lookupErr, backoff)
	}
	return write
}

// settleOutcome is what the outcome of write, a decision to create or
// cancel, means for the message: writeErr is what the tenant database
// answered (after any pending cancel of the minute's holder was applied),
// and tries, for a double booking, how often this process has now seen it
// refused.
//   - written: acked;
//   - the database unreachable: redelivered after the backoff of the
//     delivery, for as long as it takes;
//   - an event the database can never take: dead-lettered;
//   - a double booking: redelivered after the backoff of tries (the
//     holder's cancel may still come), dead-lettered after
//     allocMaxConflictTries;
//   - anything else: redelivered, dead-lettered at allocMaxErrorDeliveries.
func settleOutcome(d delivery, write decision, writeErr error, tries int, backoff func(int) time.Duration) decision {
	conflict, isConflict := errors.AsType[*tenants.SlotConflictError](writeErr)
	switch {
	case writeErr == nil:
		dec := write
		dec.action, dec.forget = actAck, true
		return dec
	case errors.Is(writeErr, tenants.ErrUnavailable):
		return redeliverOf(d, write, retryUnavailable, writeErr, backoff)
	case errors.Is(writeErr, tenants.ErrInvalidTicket):
		return deadLetterOf(write, kindInvalid, writeErr.Error())
	case isConflict:
		dec := write
		dec.holder, dec.tries = conflict.Ticket, tries
		if tries >= allocMaxConflictTries {
			dec.forget = true
			return deadLetterOf(dec, kindDoubleBooking, "double booking refused by Postgres: agent "+write.ev.Agent+
				" at "+write.ev.SlotTime.UTC().Format(time.RFC3339)+" is held by live ticket "+conflict.Ticket)
		}
		dec.action, dec.kind, dec.err, dec.delay = actRedeliver, retryConflict, writeErr, backoff(tries)
		return dec
	case d.delivered >= allocMaxErrorDeliveries:
		return deadLetterOf(write, kindError, writeErr.Error())
	}
	return redeliverOf(d, write, retryError, writeErr, backoff)
}

// deadLetterOf is dec turned into a dead letter of the given kind and
// reason.
func deadLetterOf(dec decision, kind, reason string) decision {
	dec.action, dec.kind, dec.reason = actDeadLetter, kind, reason
	return dec
}

// redeliverOf is dec turned into a redelivery for reason, after the
// backoff of d's delivery count.
func redeliverOf(d delivery, dec decision, reason string, err error, backoff func(int) time.Duration) decision {
	dec.action, dec.kind, dec.err, dec.delay = actRedeliver, reason, err, backoff(int(d.delivered))
	return dec
}

// decodeTicketEvent reads a ticket event strictly (unknown fields, trailing data
// and oversize bodies refused) and checks it against its subject's tenant
// and ticket, the SLA of its type and the window rule of docs/api.md.
func decodeTicketEvent(data []byte, tenant, ticket string) (subjects.TicketEvent, error) {
	var ev subjects.TicketEvent
	if len(data) > allocMaxEventBytes {
		return ev, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidEvent, len(data), allocMaxEventBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("%w: json: %v", ErrInvalidEvent, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ev, fmt.Errorf("%w: data after the JSON object", ErrInvalidEvent)
	}
	sla, ok := subjects.SLA(ev.Type)
	switch {
	case ev.Event != subjects.TicketCreated && ev.Event != subjects.TicketCancelled:
		return ev, fmt.Errorf("%w: event %q", ErrInvalidEvent, ev.Event)
	case ev.Tenant != tenant:
		return ev, fmt.Errorf("%w: body tenant %q differs from the subject's %q", ErrInvalidEvent, ev.Tenant, tenant)
	case ev.Ticket != ticket:
		return ev, fmt.Errorf("%w: body ticket %q differs from the subject's %q", ErrInvalidEvent, ev.Ticket, ticket)
	case !ok:
		return ev, fmt.Errorf("%w: ticket type %q", ErrInvalidEvent, ev.Type)
	case subjects.ValidID(ev.Agent) != nil:
		return ev, fmt.Errorf("%w: agent id %q", ErrInvalidEvent, ev.Agent)
	case ev.CreatedAt.IsZero():
		return ev, fmt.Errorf("%w: no created_at", ErrInvalidEvent)
	case ev.SlotTime.IsZero() || !ev.SlotTime.Equal(ev.SlotTime.Truncate(time.Minute)):
		return ev, fmt.Errorf("%w: slot_time %s is not a whole minute", ErrInvalidEvent, ev.SlotTime.Format(time.RFC3339Nano))
	case !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
		return ev, fmt.Errorf("%w: deadline %s is not created_at + %s", ErrInvalidEvent, ev.Deadline.Format(time.RFC3339Nano), sla)
	case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
		return ev, fmt.Errorf("%w: slot_time %s outside the window [%s, %s]", ErrInvalidEvent,
			ev.SlotTime.Format(time.RFC3339), ev.CreatedAt.Format(time.RFC3339Nano), ev.Deadline.Format(time.RFC3339Nano))
	case ev.Event == subjects.TicketCreated && ev.CancelledAt != nil:
		return ev, fmt.Errorf("%w: a created event with cancelled_at", ErrInvalidEvent)
	}
	return ev, nil
}
