package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// TicketLookup finds a ticket where it lives: the newest message of its
// subject in the TICKETS stream while a worker has not consumed it yet,
// then its row in the tenant database. The stream is read first: a
// worker deletes the message only after its commit, so a ticket is never
// missing from both. Admission (get, cancel, the publish-error paths, an
// Idempotency-Key takeover) and the reconciler all look tickets up here.
type TicketLookup struct {
	Stream jetstream.Stream // TICKETS
	Rows   *Tickets
	// StreamTimeout bounds each read of the stream (the direct get, the
	// leader's subject count), RowTimeout the read of the row; 0: only
	// ctx bounds it.
	StreamTimeout, RowTimeout time.Duration
}

// TicketReads says what Find reads beyond the newest stream message and,
// when there is none, the row.
type TicketReads uint8

const (
	// ReadRowUnderCreate also reads the row when the stream's newest
	// message is a create: the row is the more advanced truth, since a
	// worker may have applied a cancel whose message is gone while the
	// create's is not (a get answers from it).
	ReadRowUnderCreate TicketReads = 1 << iota
	// ConfirmAbsence asks the stream leader, when neither store has the
	// ticket, whether the subject is empty: the direct get may be served
	// by a lagging replica, and whoever acts on an absence (releases a
	// slot, admits a ticket id anew) must not act on a stale one. A
	// subject the leader says holds a message is an error (ErrUnavailable:
	// ask again later).
	ConfirmAbsence
)

// TicketState is what the stores hold for one ticket.
type TicketState struct {
	Tenant string
	// Event is the newest message of the ticket's subject, when InStream.
	Event    subjects.TicketEvent
	InStream bool
	// Row is the ticket's row in the tenant database, when InDB. It is
	// read only when the stream has no message, or under
	// ReadRowUnderCreate when that message is a create.
	Row  TicketRow
	InDB bool
}

// Latest is the ticket as it stands, and its status: a cancel in the
// stream is final; otherwise the row, when it was read and found, wins
// (allocated or cancelled); a create only the stream holds is accepted.
// found is false when neither store has the ticket.
func (s TicketState) Latest() (ev subjects.TicketEvent, status string, found bool) {
	switch {
	case s.InStream && s.Event.Event == subjects.TicketCancelled:
		return s.Event, subjects.StatusCancelled, true
	case s.InDB:
		return s.Row.event(s.Tenant), s.Row.Status, true
	case s.InStream:
		return s.Event, subjects.StatusAccepted, true
	}
	return subjects.TicketEvent{}, "", false
}

// event is the row as the ticket event that would have written it.
func (r TicketRow) event(tenant string) subjects.TicketEvent {
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: tenant, Ticket: r.ID, Type: r.Type, Agent: r.Agent,
		SlotTime: r.SlotTime.UTC(), CreatedAt: r.CreatedAt.UTC(), Deadline: r.Deadline.UTC(),
	}
	if r.Status == subjects.StatusCancelled {
		ev.Event = subjects.TicketCancelled
		ev.CancelledAt = r.CancelledAt
	}
	return ev
}

// Find looks ticket of t up. A ticket id no ticket can have is found
// nowhere, without a read. Errors: a stream that cannot be read (or a
// leader that lists a message the direct get did not return) wraps
// ErrUnavailable; a message that does not decode, or names another
// ticket, wraps ErrInvalidTicket; a row that cannot be read is Get's
// error, wrapped.
func (l TicketLookup) Find(ctx context.Context, t Tenant, ticket string, reads TicketReads) (TicketState, error) {
	st := TicketState{Tenant: t.ID}
	if subjects.ValidID(ticket) != nil {
		return st, nil
	}
	subject := subjects.TicketSubject(t.ID, ticket)
	var err error
	if st.Event, st.InStream, err = l.newest(ctx, subject, t.ID, ticket); err != nil {
		return st, err
	}
	if st.InStream && (reads&ReadRowUnderCreate == 0 || st.Event.Event != subjects.TicketCreated) {
		return st, nil
	}
	if st.Row, st.InDB, err = l.row(ctx, t, ticket); err != nil || st.InStream || st.InDB {
		return st, err
	}
	if reads&ConfirmAbsence != 0 {
		err = l.confirmEmpty(ctx, subject)
	}
	return st, err
}

// newest is the newest message of a ticket's subject, by direct get.
func (l TicketLookup) newest(ctx context.Context, subject, tenant, ticket string) (subjects.TicketEvent, bool, error) {
	var ev subjects.TicketEvent
	gctx, cancel := withTimeout(ctx, l.StreamTimeout)
	defer cancel()
	msg, err := l.Stream.GetLastMsgForSubject(gctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ev, false, nil
	}
	if err != nil {
		return ev, false, fmt.Errorf("%w: reading ticket %s from the stream: %w", ErrUnavailable, ticket, err)
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return ev, false, fmt.Errorf("%w: decoding the event on %s: %w", ErrInvalidTicket, subject, err)
	}
	if ev.Tenant != tenant || ev.Ticket != ticket {
		return ev, false, fmt.Errorf("%w: event on %s names tenant %q ticket %q", ErrInvalidTicket, subject, ev.Tenant, ev.Ticket)
	}
	return ev, true, nil
}

// row is the ticket's row, if a worker wrote it.
func (l TicketLookup) row(ctx context.Context, t Tenant, ticket string) (TicketRow, bool, error) {
	gctx, cancel := withTimeout(ctx, l.RowTimeout)
	defer cancel()
	r, err := l.Rows.Get(gctx, t, ticket)
	if errors.Is(err, ErrTicketNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("reading ticket %s from the tenant database: %w", ticket, err)
	}
	return r, true, nil
}

// confirmEmpty asks the stream leader for the subject's message count.
func (l TicketLookup) confirmEmpty(ctx context.Context, subject string) error {
	ictx, cancel := withTimeout(ctx, l.StreamTimeout)
	defer cancel()
	info, err := l.Stream.Info(ictx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return fmt.Errorf("%w: reading the stream state of %s: %w", ErrUnavailable, subject, err)
	}
	if info.State.Subjects[subject] > 0 {
		return fmt.Errorf("%w: the stream leader lists a message on %s the direct get did not return", ErrUnavailable, subject)
	}
	return nil
}

// withTimeout is context.WithTimeout, or ctx itself for d = 0.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
