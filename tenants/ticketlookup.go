package tenants

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// TicketLookup finds a ticket where it lives: its newest record in its
// tenant's slot bucket (the ticket id names the key, subjects.ParseTicketID),
// then its row in the tenant database. The record is read first: it is
// the ticket's hand-off to the allocators and stays for
// subjects.SlotRecordAge, far longer than an allocator takes to write the
// row, so a ticket is never missing from both. Admission's get and cancel
// look tickets up here.
//
// A key's newest record may be a later one than the ticket's (the ticket
// was cancelled and its minute taken again, or held): the lookup walks
// back through the records' Prev revisions to the ticket's newest one. A
// ticket moved to another agent-minute (feasibility admission, a re-plan)
// left a record at its old key saying where it went (SlotRecord.Moved):
// the lookup follows it to the ticket's current record (TicketRecord).
// A ticket id that names no slot (ids of an earlier version) is looked up
// in the tenant database only.
type TicketLookup struct {
	// Slots gives the slot bucket of a tenant's shard; an error wrapping
	// jetstream.ErrBucketNotFound means no bucket, so no record, yet.
	Slots func(ctx context.Context, tenant string) (jetstream.KeyValue, error)
	Rows  *Tickets
	// Parked, when set, gives the stream of parked slot records
	// (subjects.StreamParked): a ticket whose slot record has aged out
	// while its tenant database was down is read there. An error wrapping
	// jetstream.ErrStreamNotFound means nothing was ever parked.
	Parked func(ctx context.Context) (jetstream.Stream, error)
	// SlotTimeout bounds each read of the bucket (and of Parked), RowTimeout the read of
	// the row; 0: only ctx bounds it.
	SlotTimeout, RowTimeout time.Duration
}

// TicketReads says what Find reads beyond the ticket's newest record
// and, when there is none, the row.
type TicketReads uint8

// ReadRowUnderCreate also reads the row when the ticket's newest record is
// its create (confirmed): the row is the more advanced truth once an
// allocator has written it (allocated), and a get answers from it.
const ReadRowUnderCreate TicketReads = 1

// TicketState is what the stores hold for one ticket.
type TicketState struct {
	Tenant string
	// Event is the ticket's newest slot record (SlotRecord.Event: created
	// for confirmed, cancelled for released) at Revision, when InSlots.
	// Once the ticket moved, that record is under the key of its current
	// agent and minute (Event.Agent, Event.SlotTime), not the one its id
	// names, and Moves counts its moves.
	Event    subjects.TicketEvent
	Revision uint64
	Moves    int
	InSlots  bool
	// RowUnavailable: the row was to be read under a create the slot
	// records hold, and the tenant database could not be reached; the
	// record stands for the ticket (accepted).
	RowUnavailable bool
	// Parked: the record was read from the parked stream (its slot record
	// had aged out before its tenant database could take it); InSlots
	// is set too, since it stands for the ticket the same way.
	Parked bool
	// Row is the ticket's row in the tenant database, when InDB. It is
	// read only when no record of the ticket was found, or under
	// ReadRowUnderCreate when the record is a create.
	Row  TicketRow
	InDB bool
}

// Latest is the ticket as it stands, and its status: a cancel in the slot
// records is final; otherwise the row, when it was read and found, wins
// (allocated or cancelled), at the agent and minute of the record when
// the record has more moves than the row (an allocator has yet to move
// it); a create only the slot records hold is accepted. found is false
// when neither store has the ticket.
func (s TicketState) Latest() (ev subjects.TicketEvent, status string, found bool) {
	switch {
	case s.InSlots && s.Event.Event == subjects.TicketCancelled:
		return s.Event, subjects.StatusCancelled, true
	case s.InDB:
		ev := s.Row.event(s.Tenant)
		if s.InSlots && s.Moves > s.Row.Moves && s.Row.Status != subjects.StatusCancelled {
			// The row has not followed the ticket's newest move yet: the
			// record says where it is now.
			ev.Agent, ev.SlotTime = s.Event.Agent, s.Event.SlotTime.UTC()
		}
		return ev, s.Row.Status, true
	case s.InSlots:
		return s.Event, subjects.StatusAccepted, true
	}
	return subjects.TicketEvent{}, "", false
}

// event is the row as the ticket event that would have written it.
func (r TicketRow) event(tenant string) subjects.TicketEvent {
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: tenant, Ticket: r.ID, Type: r.Type, Agent: r.Agent,
		SlotTime: r.SlotTime.UTC(), CreatedAt: r.CreatedAt.UTC(), Deadline: r.Deadline.UTC(),
		Subject: r.Subject, Description: r.Description,
	}
	if r.Status == subjects.StatusCancelled {
		ev.Event = subjects.TicketCancelled
		ev.CancelledAt = r.CancelledAt
	}
	return ev
}

// Find looks ticket of t up. A ticket id no ticket can have is found
// nowhere, without a read. Errors: a bucket that cannot be read wraps
// ErrUnavailable; a record on the way to the ticket's that does not
// decode (subjects.DecodeSlotRecord) wraps ErrInvalidTicket; a row that
// cannot be read is Get's error, wrapped.
func (l TicketLookup) Find(ctx context.Context, t Tenant, ticket string, reads TicketReads) (TicketState, error) {
	st := TicketState{Tenant: t.ID}
	if subjects.ValidID(ticket) != nil {
		return st, nil
	}
	var err error
	if agent, minute, _, perr := subjects.ParseTicketID(ticket); perr == nil {
		at, err := l.record(ctx, t.ID, subjects.SlotKey(t.ID, agent, minute), ticket)
		if err != nil {
			return st, err
		}
		if at.Found {
			st.Event, st.Revision, st.Moves, st.InSlots = at.Record.Event(), at.Revision, at.Record.Moves, true
		}
	}
	if !st.InSlots && l.Parked != nil {
		rec, found, err := l.parked(ctx, t.ID, ticket)
		if err != nil {
			return st, err
		}
		if found {
			st.Event, st.Moves, st.InSlots, st.Parked = rec.Event(), rec.Moves, true, true
		}
	}
	if st.InSlots && (reads&ReadRowUnderCreate == 0 || st.Event.Event != subjects.TicketCreated) {
		return st, nil
	}
	st.Row, st.InDB, err = l.row(ctx, t, ticket)
	if err != nil && st.InSlots && errors.Is(err, ErrUnavailable) {
		// The slot record has the ticket: while the tenant database
		// cannot be read, the record answers (accepted), rather than
		// nothing at all.
		st.RowUnavailable = true
		return st, nil
	}
	return st, err
}

// MaxMoveHops bounds how many moves a look-up follows from a ticket's
// admission key to its newest record; a longer chain is refused
// (ErrInvalidTicket). Moves are rare: a ticket that moved this often is
// far more likely a loop of records written by hand.
const MaxMoveHops = 64

// record is ticket's newest record, starting at key (see TicketRecord).
func (l TicketLookup) record(ctx context.Context, tenant, key, ticket string) (SlotRecordAt, error) {
	gctx, cancel := withTimeout(ctx, l.SlotTimeout)
	defer cancel()
	kv, err := l.Slots(gctx, tenant)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return SlotRecordAt{}, nil
	}
	if err != nil {
		return SlotRecordAt{}, fmt.Errorf("%w: opening the slot bucket of ticket %s: %w", ErrUnavailable, ticket, err)
	}
	cancel()
	return TicketRecord(ctx, kv, key, ticket, subjects.CheckNames, l.SlotTimeout)
}

// SlotRecordAt is a ticket's record found in a slot bucket: Record at
// Revision of Key, when Found.
type SlotRecordAt struct {
	Record   subjects.SlotRecord
	Key      string
	Revision uint64
	Found    bool
}

// TicketRecord is ticket's newest record in kv, starting at key (the key
// its id names, or any key it held since): the key's newest record if it
// is the ticket's, else the first of the ticket's found walking back
// through Prev, at most subjects.SlotHistory records deep (the most a key
// keeps). A record on the way whose Moved names the ticket says it moved
// away from that key: the walk goes on at the key Moved names, from its
// newest record, at most MaxMoveHops times. A revision gone from the
// bucket (aged out, or pushed out of the history) ends the walk: the
// ticket is then in its tenant database. Each read is bounded by timeout
// (0: only ctx). Errors: a bucket that cannot be read wraps
// ErrUnavailable, a record on the way that does not decode or a chain of
// moves too long ErrInvalidTicket. check is how strictly each record is
// decoded (subjects.DecodeSlotRecord): CheckNames for a reader,
// CheckWritable for a writer about to apply the record found.
func TicketRecord(ctx context.Context, kv jetstream.KeyValue, key, ticket string, check subjects.TicketEventCheck,
	timeout time.Duration) (SlotRecordAt, error) {
	tenant, _, _, err := subjects.ParseSlotKey(key)
	if err != nil {
		return SlotRecordAt{}, fmt.Errorf("%w: %w", ErrInvalidTicket, err)
	}
	hops := 0
	var rev uint64 // 0: the newest
	for step := 0; step < subjects.SlotHistory; step++ {
		gctx, cancel := withTimeout(ctx, timeout)
		var e jetstream.KeyValueEntry
		if rev == 0 {
			e, err = kv.Get(gctx, key)
		} else {
			e, err = kv.GetRevision(gctx, key, rev)
		}
		cancel()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return SlotRecordAt{}, nil
		}
		if err != nil {
			return SlotRecordAt{}, fmt.Errorf("%w: reading slot %s of ticket %s: %w", ErrUnavailable, key, ticket, err)
		}
		if e.Operation() != jetstream.KeyValuePut {
			// Nothing deletes in a slot bucket; a marker someone wrote
			// anyway has no Prev to follow.
			return SlotRecordAt{}, nil
		}
		rec, err := subjects.DecodeSlotRecord(key, e.Value(), check)
		if err != nil {
			// ErrInvalidTicket is subjects.ErrInvalidEvent; the record's
			// error is kept in the message.
			return SlotRecordAt{}, fmt.Errorf("%w: record %d of slot %s: %v", ErrInvalidTicket, e.Revision(), key, err)
		}
		if rec.HasTicket() && rec.Ticket == ticket {
			return SlotRecordAt{Record: rec, Key: key, Revision: e.Revision(), Found: true}, nil
		}
		if rec.Moved != nil && rec.Moved.Ticket == ticket {
			// The ticket moved away from this minute before this record
			// took it: its newer records are where it went.
			if hops++; hops > MaxMoveHops {
				return SlotRecordAt{}, fmt.Errorf("%w: ticket %s moved more than %d times from slot %s", ErrInvalidTicket, ticket,
					MaxMoveHops, key)
			}
			key, rev, step = subjects.SlotKey(tenant, rec.Moved.Agent, rec.Moved.SlotTime), 0, -1
			continue
		}
		// Prev must point back in time: a record naming its own or a later
		// revision (written by hand) would walk in circles.
		if rec.Prev == 0 || rec.Prev >= e.Revision() {
			return SlotRecordAt{}, nil
		}
		rev = rec.Prev
	}
	return SlotRecordAt{}, nil
}

// parked is the ticket's parked record, if an allocator parked one that
// has not been written yet.
func (l TicketLookup) parked(ctx context.Context, tenant, ticket string) (subjects.SlotRecord, bool, error) {
	gctx, cancel := withTimeout(ctx, l.SlotTimeout)
	defer cancel()
	st, err := l.Parked(gctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return subjects.SlotRecord{}, false, nil
	}
	if err != nil {
		return subjects.SlotRecord{}, false, fmt.Errorf("%w: opening the parked stream for ticket %s: %w", ErrUnavailable, ticket, err)
	}
	m, err := st.GetLastMsgForSubject(gctx, subjects.ParkedSubject(tenant, ticket))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return subjects.SlotRecord{}, false, nil
	}
	if err != nil {
		return subjects.SlotRecord{}, false, fmt.Errorf("%w: reading the parked record of ticket %s: %w", ErrUnavailable, ticket, err)
	}
	rec, err := subjects.DecodeParkedRecord(m.Subject, m.Header.Get(subjects.HeaderOriginalSubject), m.Data)
	if err != nil || !rec.HasTicket() || rec.Ticket != ticket {
		return subjects.SlotRecord{}, false, fmt.Errorf("%w: parked record %d of ticket %s: %v", ErrInvalidTicket, m.Sequence, ticket, err)
	}
	return rec, true, nil
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

// withTimeout is context.WithTimeout, or ctx itself for d = 0.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
