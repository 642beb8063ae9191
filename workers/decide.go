package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"tms/subjects"
	"tms/tenants"
)

// The allocator's decisions are made here, apart from their effects: what a
// record of a slot bucket's stream asks for (decide), what a tenant look-up
// means for it (settleLookup), and what the outcome of its write means
// (settleOutcome). They read plain values and return a decision, which
// settle.go and deadletter.go carry out.

// delivery is one message of a slot shard's stream as the decisions see it.
type delivery struct {
	shard     int // the shard whose consumer delivered it
	subject   string
	header    nats.Header
	data      []byte
	seq       uint64 // stream sequence: the record's revision
	delivered uint64 // deliveries so far, this one included
	// parked: the record came from the parked stream, where it is
	// parkedSeq under parkedSubject; subject, header and seq are then the
	// original's (subjects.HeaderOriginalSubject, HeaderOriginalSequence),
	// shard the shard of its bucket (-1: none), delivered the parked
	// copy's deliveries.
	parked        bool
	parkedSubject string
	parkedSeq     uint64
}

// action is what a decision has the allocator do with a message.
type action int

const (
	// actCreate and actCancel write the event into the tenant's database
	// (ApplyCreated, ApplyCancelled), actMove moves the ticket's row to
	// the event's slot (ApplyMoved); the outcome decides the rest.
	actCreate action = iota + 1
	actCancel
	actMove
	// actAck: the event is written (or was already there), or the record
	// asks for no write; the message is acked with the server's
	// confirmation.
	actAck
	// actRedeliver gives the message back to come again after delay.
	actRedeliver
	// actDeadLetter parks the message on the dead-letter stream and
	// terminates it.
	actDeadLetter
	// actPark sets a record aside on the parked stream (its tenant's
	// database is unreachable) and acks it there.
	actPark
)

// String names the action in test failures.
func (a action) String() string {
	switch a {
	case actCreate:
		return "create"
	case actCancel:
		return "cancel"
	case actMove:
		return "move"
	case actAck:
		return "ack"
	case actRedeliver:
		return "redeliver"
	case actDeadLetter:
		return "dead-letter"
	case actPark:
		return "park"
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

// What a record is (label of tms_allocator_processed_total and
// tms_allocator_handle_seconds): a ticket's create, move or cancel,
// written into the tenant database, or a record with nothing to write.
const (
	recordCreated   = subjects.TicketCreated
	recordCancelled = subjects.TicketCancelled
	// recordMoved is a moved ticket's confirmed record at its new key
	// (SlotRecord.Moves > 0).
	recordMoved = subjects.EventMoved
	// recordVacated is a minute left by a moved ticket that no ticket
	// took (subjects.SlotVacated): the move is its ticket's own record.
	recordVacated = subjects.SlotVacated
	// recordHeld is a hold of validate_eta: no ticket yet.
	recordHeld = "held"
	// recordFreed is a minute released without a ticket.
	recordFreed = "freed"
	// recordInvalid is a record dead-lettered before any write.
	recordInvalid = "invalid"
)

// Redelivery reasons (label of tms_allocator_failed_total).
const (
	retryRegistry          = "registry"
	retryUnavailable       = "unavailable"
	retryConflict          = "conflict"
	retryError             = "error"
	retryDeadLetterPublish = "dead_letter_publish"
	retryParkPublish       = "park_publish"
)

// decision is what becomes of one delivery.
type decision struct {
	action action
	// record says what the record is (recordCreated ...), "" when it
	// does not decode.
	record string
	// key is the slot key of the message's subject, tenant its tenant, ""
	// when the subject or the key does not parse; ticket is the ticket
	// the record names, "" when it names none that parses.
	key, tenant, ticket string
	// prev is the revision of the key's record this one replaced: where
	// a double booking's walk back through the key's history starts.
	prev uint64
	// moved is the record's Moved: the ticket that held the minute before
	// it moved there (a holder the database may not have moved yet).
	moved *subjects.SlotMove
	// ev is the ticket event to write (actCreate, actCancel, actMove, and
	// the actAck after it); moves is the record's count of moves.
	ev    subjects.TicketEvent
	moves int
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

// writes reports whether the decision is to create, move or cancel.
func (dec decision) writes() bool {
	return dec.action == actCreate || dec.action == actCancel || dec.action == actMove
}

// kvOperation is the header a KV delete or purge marker carries (the
// nats.go client's name for it). tms never deletes a slot record.
const kvOperation = "KV-Operation"

// decide reads a delivery of shard d.shard: a subject of that shard's
// bucket and a record that subjects.DecodeSlotRecord (CheckWritable)
// accepts for its key, or a dead letter of kind invalid. A confirmed
// record is its ticket's create, or its move when the ticket was moved
// (Moves > 0), a released one with a ticket that ticket's cancel; a
// hold, a minute freed without a ticket or vacated by a moved ticket is
// acked with nothing to write.
func decide(d delivery) decision {
	bucket, key, err := subjects.ParseSlotSubject(d.subject)
	if err != nil {
		return deadLetterOf(decision{}, kindInvalid, "subject: "+err.Error())
	}
	if bucket != subjects.SlotBucket(d.shard) {
		return deadLetterOf(decision{}, kindInvalid, fmt.Sprintf("subject: %q is not of bucket %s", d.subject,
			subjects.SlotBucket(d.shard)))
	}
	tenant, _, _, err := subjects.ParseSlotKey(key)
	if err != nil {
		return deadLetterOf(decision{}, kindInvalid, "key: "+err.Error())
	}
	dec := decision{key: key, tenant: tenant}
	if op := d.header.Get(kvOperation); op != "" {
		return deadLetterOf(dec, kindInvalid, fmt.Sprintf("a %s marker on %q: tms never deletes a slot record", op, key))
	}
	rec, err := subjects.DecodeSlotRecord(key, d.data, subjects.CheckWritable)
	if err != nil {
		dec.ticket = ticketOf(d.data)
		return deadLetterOf(dec, kindInvalid, err.Error())
	}
	dec.prev, dec.moved = rec.Prev, rec.Moved
	switch {
	case rec.State == subjects.SlotHeld:
		dec.action, dec.record = actAck, recordHeld
	case rec.State == subjects.SlotVacated:
		dec.action, dec.record = actAck, recordVacated
	case !rec.HasTicket():
		dec.action, dec.record = actAck, recordFreed
	case rec.State == subjects.SlotConfirmed && rec.Moves > 0:
		dec.action, dec.record, dec.ticket, dec.ev, dec.moves = actMove, recordMoved, rec.Ticket, rec.Event(), rec.Moves
	case rec.State == subjects.SlotConfirmed:
		dec.action, dec.record, dec.ticket, dec.ev = actCreate, recordCreated, rec.Ticket, rec.Event()
	default:
		dec.action, dec.record, dec.ticket, dec.ev, dec.moves = actCancel, recordCancelled, rec.Ticket, rec.Event(), rec.Moves
	}
	return dec
}

// ticketOf is the ticket a record that failed to decode names, when it
// names one as a ticket id: its dead letter goes under that ticket's
// subject. Only the first JSON value is read, leniently.
func ticketOf(data []byte) string {
	var v struct {
		Ticket string `json:"ticket"`
	}
	if json.NewDecoder(bytes.NewReader(data)).Decode(&v) != nil {
		return ""
	}
	if _, _, _, err := subjects.ParseTicketID(v.Ticket); err != nil {
		return ""
	}
	return v.Ticket
}

// settleLookup is what the look-up of the tenant of write, a decision to
// create, move or cancel, means for it: lookupErr nil keeps write; an unknown
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

// settleOutcome is what the outcome of write, a decision to create, move or
// cancel, means for the message: writeErr is what the tenant database
// answered (after any release of the minute's holder found in the key's
// history was applied),
// and tries, for a double booking, how often this process has now seen it
// refused.
//   - written: acked;
//   - the database unreachable: redelivered after the backoff of the
//     delivery, for as long as it takes;
//   - an event the database can never take: dead-lettered;
//   - a double booking: redelivered after the backoff of tries (the
//     holder's release may not have been readable: a replica behind, a
//     holder cancelled meanwhile in the database), dead-lettered after
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

// decideParked is decide for a record of the parked stream: the original
// record as decide reads it, which must be of a slot shard and name the
// tenant and ticket of its parked subject.
func decideParked(d delivery) decision {
	if d.shard < 0 || d.seq == 0 {
		return deadLetterOf(decision{}, kindInvalid, fmt.Sprintf("parked record %s without a slot subject and sequence (%q)",
			d.parkedSubject, d.subject))
	}
	dec := decide(d)
	if dec.action == actDeadLetter {
		return dec
	}
	tenant, ticket, err := subjects.ParseParkedSubject(d.parkedSubject)
	switch {
	case err != nil:
		return deadLetterOf(dec, kindInvalid, err.Error())
	case tenant != dec.tenant || ticket != dec.ticket:
		return deadLetterOf(dec, kindInvalid, fmt.Sprintf("parked record %s is of key %q, ticket %q", d.parkedSubject,
			dec.key, dec.ticket))
	}
	return dec
}

// unavailableOf is write, a decision to create, move or cancel, once its
// tenant's database could not be reached (err) and is left alone for
// downFor: a record of a slot stream is parked (the shard's consumer
// moves on: one tenant never holds up the others), a parked one comes
// again after downFor.
func unavailableOf(d delivery, write decision, err error, downFor time.Duration) decision {
	dec := write
	dec.kind, dec.err = retryUnavailable, err
	if d.parked {
		dec.action, dec.delay = actRedeliver, downFor
		return dec
	}
	dec.action = actPark
	return dec
}
