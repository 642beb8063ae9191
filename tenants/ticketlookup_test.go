package tenants_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// TestTicketLookup finds tickets in every place they can be, against a
// real slot bucket (its records written here as the responders write
// them) and a real tenant database: only a record (accepted), only the
// row (an id of an earlier version, or a record aged out), a cancel in
// the records, a row under a create record (the row wins when asked for),
// a cancelled ticket whose minute was held and taken again since (found
// walking back through Prev), nowhere; and it refuses what it cannot
// read.
func TestTicketLookup(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 2*time.Minute)
	ten := e.createAccount(t, "Lookup", "lookup@lookup.example")
	agent, err := e.Agents().Create(ctx, ten, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	rows := e.Tickets
	shards := subjects.DefaultSlotShards
	kv, err := e.js.CreateKeyValue(ctx, subjects.SlotBucketConfig(subjects.SlotShard(ten.ID, shards), 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	slots := func(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
		return e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(tenant, shards)))
	}
	lookup := tenants.TicketLookup{Slots: slots, Rows: rows, SlotTimeout: 5 * time.Second, RowTimeout: 5 * time.Second}

	t0 := time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.UTC)
	minute := func(m int) time.Time { return t0.Truncate(time.Minute).Add(time.Duration(m+1) * time.Minute) }
	created := func(m int) subjects.TicketEvent {
		id, err := subjects.NewSlotTicketID(agent.ID, minute(m), subjects.NewTicketNonce())
		if err != nil {
			t.Fatal(err)
		}
		return subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: ten.ID, Ticket: id, Type: subjects.Gold,
			Agent: agent.ID, SlotTime: minute(m), CreatedAt: t0, Deadline: t0.Add(2 * time.Hour)}
	}
	cancelledAt := t0.Add(time.Second)
	cancelled := func(ev subjects.TicketEvent) subjects.TicketEvent {
		ev.Event, ev.CancelledAt = subjects.TicketCancelled, &cancelledAt
		return ev
	}
	key := func(m int) string { return subjects.SlotKey(ten.ID, agent.ID, minute(m)) }
	// write puts rec as the key's next record, over revision prev (0:
	// the key's first), and returns its revision.
	write := func(t *testing.T, key string, rec any, prev uint64) uint64 {
		t.Helper()
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var rev uint64
		if prev == 0 {
			rev, err = kv.Create(ctx, key, data)
		} else {
			rev, err = kv.Update(ctx, key, data, prev)
		}
		if err != nil {
			t.Fatalf("writing %s: %v", key, err)
		}
		return rev
	}
	find := func(t *testing.T, id string, reads tenants.TicketReads) tenants.TicketState {
		t.Helper()
		got, err := lookup.Find(ctx, ten, id, reads)
		if err != nil {
			t.Fatalf("Find(%s): %v", id, err)
		}
		return got
	}
	wantLatest := func(t *testing.T, got tenants.TicketState, want subjects.TicketEvent, status string) {
		t.Helper()
		ev, s, ok := got.Latest()
		if !ok || s != status || ev.Event != want.Event || ev.Ticket != want.Ticket || ev.Agent != want.Agent || ev.Type != want.Type ||
			!ev.SlotTime.Equal(want.SlotTime) || !ev.CreatedAt.Equal(want.CreatedAt) || !ev.Deadline.Equal(want.Deadline) {
			t.Fatalf("Latest = %+v %q %v, want %+v %q", ev, s, ok, want, status)
		}
	}

	aged := created(2) // a ticket whose key has no record: its row only
	t.Run("only a record: accepted, with or without the row", func(t *testing.T) {
		ev := created(0)
		rev := write(t, key(0), subjects.ConfirmedRecord(ev, 0), 0)
		for _, reads := range []tenants.TicketReads{0, tenants.ReadRowUnderCreate} {
			got := find(t, ev.Ticket, reads)
			if !got.InSlots || got.InDB || got.Revision != rev {
				t.Fatalf("reads %b: %+v, want the record at %d", reads, got, rev)
			}
			wantLatest(t, got, ev, subjects.StatusAccepted)
		}
	})

	t.Run("only in the database: an old id, or a record aged out", func(t *testing.T) {
		old := created(1)
		old.Ticket = subjects.NewTicketID() // names no slot
		for _, ev := range []subjects.TicketEvent{old, aged} {
			if err := rows.ApplyCreated(ctx, ten, ev); err != nil {
				t.Fatal(err)
			}
			got := find(t, ev.Ticket, 0)
			if got.InSlots || !got.InDB {
				t.Fatalf("%s: %+v", ev.Ticket, got)
			}
			wantLatest(t, got, ev, subjects.StatusAllocated)
		}
	})

	t.Run("a cancel in the records is final; the row is not read", func(t *testing.T) {
		ev := created(3)
		if err := rows.ApplyCreated(ctx, ten, ev); err != nil {
			t.Fatal(err)
		}
		rev := write(t, key(3), subjects.ConfirmedRecord(ev, 0), 0)
		write(t, key(3), subjects.ReleasedRecord(ev, cancelledAt, rev), rev)
		got := find(t, ev.Ticket, tenants.ReadRowUnderCreate)
		if !got.InSlots || got.InDB {
			t.Fatalf("%+v", got)
		}
		wantLatest(t, got, cancelled(ev), subjects.StatusCancelled)
		if ev, _, _ := got.Latest(); ev.CancelledAt == nil || !ev.CancelledAt.Equal(cancelledAt) {
			t.Errorf("cancelled_at %v, want %v", ev.CancelledAt, cancelledAt)
		}
	})

	t.Run("the row under a create record wins when read", func(t *testing.T) {
		ev := created(4)
		write(t, key(4), subjects.ConfirmedRecord(ev, 0), 0)
		if err := rows.ApplyCreated(ctx, ten, ev); err != nil {
			t.Fatal(err)
		}
		got := find(t, ev.Ticket, tenants.ReadRowUnderCreate)
		if !got.InSlots || !got.InDB {
			t.Fatalf("%+v", got)
		}
		wantLatest(t, got, ev, subjects.StatusAllocated)
		got = find(t, ev.Ticket, 0)
		if !got.InSlots || got.InDB {
			t.Fatalf("without ReadRowUnderCreate: %+v", got)
		}
		wantLatest(t, got, ev, subjects.StatusAccepted)
	})

	t.Run("a cancelled ticket whose minute was held and taken again", func(t *testing.T) {
		first, second := created(5), created(5)
		rev := write(t, key(5), subjects.ConfirmedRecord(first, 0), 0)
		rev = write(t, key(5), subjects.ReleasedRecord(first, cancelledAt, rev), rev)
		expiry := t0.Add(time.Minute)
		rev = write(t, key(5), subjects.SlotRecord{State: subjects.SlotHeld, Tenant: ten.ID, Agent: agent.ID, SlotTime: minute(5),
			Prev: rev, Type: subjects.Gold, CreatedAt: t0, Nonce: subjects.NewHoldNonce(), HoldExpiresAt: &expiry}, rev)
		rev = write(t, key(5), subjects.ConfirmedRecord(second, rev), rev)

		got := find(t, first.Ticket, tenants.ReadRowUnderCreate)
		if !got.InSlots || got.InDB || got.Revision >= rev {
			t.Fatalf("the first ticket: %+v", got)
		}
		wantLatest(t, got, cancelled(first), subjects.StatusCancelled)
		got = find(t, second.Ticket, tenants.ReadRowUnderCreate)
		if !got.InSlots || got.Revision != rev {
			t.Fatalf("the second ticket: %+v, want revision %d", got, rev)
		}
		wantLatest(t, got, second, subjects.StatusAccepted)
		// Another nonce on the same minute: walked back to the first
		// record, then looked for in the database.
		never := created(5)
		if got := find(t, never.Ticket, tenants.ReadRowUnderCreate); got.InSlots || got.InDB {
			t.Fatalf("a ticket the minute never had: %+v", got)
		}
	})

	t.Run("a Prev that leads nowhere ends the walk", func(t *testing.T) {
		ev, other := created(6), created(7)
		otherRev := write(t, key(7), subjects.ConfirmedRecord(other, 0), 0)
		rev := write(t, key(6), subjects.ConfirmedRecord(created(6), otherRev), 0) // another key's revision
		looping := created(8)
		write(t, key(8), subjects.ConfirmedRecord(created(8), rev+10), 0) // a revision from the future
		for _, id := range []string{ev.Ticket, looping.Ticket} {
			if got := find(t, id, 0); got.InSlots || got.InDB {
				t.Fatalf("%s: %+v", id, got)
			}
		}
	})

	t.Run("nowhere; an impossible id without a read", func(t *testing.T) {
		for _, id := range []string{created(9).Ticket, subjects.NewTicketID(), "not an id", ""} {
			got := find(t, id, tenants.ReadRowUnderCreate)
			if _, _, ok := got.Latest(); ok || got.InSlots || got.InDB {
				t.Fatalf("%q: %+v", id, got)
			}
		}
	})

	t.Run("a record that does not decode is an invalid ticket", func(t *testing.T) {
		ev := created(10)
		bad := subjects.ConfirmedRecord(ev, 0)
		bad.Agent = "someone-else" // the key's agent is not the record's
		write(t, key(10), bad, 0)
		if _, err := lookup.Find(ctx, ten, ev.Ticket, 0); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Fatalf("Find over a record of another slot: %v, want ErrInvalidTicket", err)
		}
	})

	t.Run("a parked record stands for a ticket whose slot record is gone", func(t *testing.T) {
		parked, err := e.js.CreateStream(ctx, subjects.ParkedStreamConfig(1))
		if err != nil {
			t.Fatal(err)
		}
		withParked := lookup
		withParked.Parked = func(context.Context) (jetstream.Stream, error) { return parked, nil }
		ev := created(12) // no record under its key: aged out
		data, err := json.Marshal(subjects.ConfirmedRecord(ev, 0))
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(subjects.ParkedSubject(ten.ID, ev.Ticket))
		msg.Header.Set(subjects.HeaderOriginalSubject, subjects.SlotSubject(ten.ID, agent.ID, minute(12), shards))
		msg.Data = data
		if _, err := e.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		restore := testkit.RefuseConnections(t, ten.DBName)
		got, err := withParked.Find(ctx, ten, ev.Ticket, tenants.ReadRowUnderCreate)
		if err != nil || !got.InSlots || !got.Parked || !got.RowUnavailable {
			t.Fatalf("Find of a parked ticket while the database refuses: %+v %v", got, err)
		}
		wantLatest(t, got, ev, subjects.StatusAccepted)
		restore()
		// Without a parked stream the same ticket is nowhere.
		if got := find(t, ev.Ticket, tenants.ReadRowUnderCreate); got.InSlots || got.InDB {
			t.Fatalf("without the parked stream: %+v", got)
		}
		// No parked stream yet: nothing parked, no error.
		none := lookup
		none.Parked = func(context.Context) (jetstream.Stream, error) { return nil, jetstream.ErrStreamNotFound }
		if got, err := none.Find(ctx, ten, ev.Ticket, 0); err != nil || got.InSlots {
			t.Fatalf("with no parked stream: %+v %v", got, err)
		}
	})

	t.Run("no bucket yet: nothing there, the row still read", func(t *testing.T) {
		noBucket := lookup
		noBucket.Slots = func(context.Context, string) (jetstream.KeyValue, error) {
			return nil, jetstream.ErrBucketNotFound
		}
		got, err := noBucket.Find(ctx, ten, aged.Ticket, 0)
		if err != nil || got.InSlots || !got.InDB {
			t.Fatalf("Find without a bucket: %+v %v", got, err)
		}
	})

	t.Run("a moved ticket: its current record, through moves and a re-taken key", func(t *testing.T) {
		ticket := created(20) // admitted at minute 20
		at := func(ev subjects.TicketEvent, m int) subjects.TicketEvent { ev.SlotTime = minute(m); return ev }
		movedRec := func(ev subjects.TicketEvent, moves int, prev uint64) subjects.SlotRecord {
			rec := subjects.ConfirmedRecord(ev, prev)
			rec.Moves = moves
			return rec
		}
		r20 := write(t, key(20), subjects.ConfirmedRecord(ticket, 0), 0)
		// Moved to minute 21; N takes minute 20, is cancelled, M takes it.
		r21 := write(t, key(21), movedRec(at(ticket, 21), 1, 0), 0)
		n := created(20)
		nRec := subjects.ConfirmedRecord(n, r20)
		nRec.Moved = &subjects.SlotMove{Ticket: ticket.Ticket, Agent: agent.ID, SlotTime: minute(21)}
		rn := write(t, key(20), nRec, r20)
		rn = write(t, key(20), subjects.ReleasedRecord(n, cancelledAt, rn), rn)
		m := created(20)
		write(t, key(20), subjects.ConfirmedRecord(m, rn), rn)
		// Moved again to minute 22, minute 21 left vacated.
		r22 := write(t, key(22), movedRec(at(ticket, 22), 2, 0), 0)
		write(t, key(21), subjects.VacatedRecord(movedRec(at(ticket, 21), 1, 0), agent.ID, minute(22), r21), r21)

		got := find(t, ticket.Ticket, 0)
		if !got.InSlots || got.Revision != r22 || got.Moves != 2 {
			t.Fatalf("%+v, want the record of minute 22 at %d with 2 moves", got, r22)
		}
		wantLatest(t, got, at(ticket, 22), subjects.StatusAccepted)
		wantLatest(t, find(t, n.Ticket, 0), cancelled(n), subjects.StatusCancelled)
		wantLatest(t, find(t, m.Ticket, 0), m, subjects.StatusAccepted)

		// Its row, one move behind: the record says where it is.
		if _, err := rows.ApplyMoved(ctx, ten, at(ticket, 21), 1); err != nil {
			t.Fatal(err)
		}
		got = find(t, ticket.Ticket, tenants.ReadRowUnderCreate)
		if !got.InDB || got.Row.Moves != 1 {
			t.Fatalf("%+v, want its row with 1 move", got)
		}
		wantLatest(t, got, at(ticket, 22), subjects.StatusAllocated)
		// Its row, written by an allocator, follows it too.
		if _, err := rows.ApplyMoved(ctx, ten, at(ticket, 22), 2); err != nil {
			t.Fatal(err)
		}
		got = find(t, ticket.Ticket, tenants.ReadRowUnderCreate)
		if !got.InDB || got.Row.Moves != 2 {
			t.Fatalf("%+v, want its row with 2 moves", got)
		}
		wantLatest(t, got, at(ticket, 22), subjects.StatusAllocated)

		// Cancelled where it is now.
		rel := subjects.ReleasedRecord(at(ticket, 22), cancelledAt, r22)
		rel.Moves = 2
		write(t, key(22), rel, r22)
		wantLatest(t, find(t, ticket.Ticket, tenants.ReadRowUnderCreate), cancelled(at(ticket, 22)), subjects.StatusCancelled)
	})

	t.Run("moves in a loop are refused", func(t *testing.T) {
		ticket := created(23)
		at24 := ticket
		at24.SlotTime = minute(24)
		r23 := write(t, key(23), subjects.ConfirmedRecord(ticket, 0), 0)
		moved := subjects.ConfirmedRecord(at24, 0)
		moved.Moves = 1
		r24 := write(t, key(24), moved, 0)
		write(t, key(23), subjects.VacatedRecord(subjects.ConfirmedRecord(ticket, 0), agent.ID, minute(24), r23), r23)
		// Written by hand: minute 24 says it went back to 23, which says 24.
		write(t, key(24), subjects.VacatedRecord(moved, agent.ID, minute(23), r24), r24)
		if _, err := lookup.Find(ctx, ten, ticket.Ticket, 0); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Fatalf("Find through a loop of moves: %v, want ErrInvalidTicket", err)
		}
	})

	t.Run("the database unreachable: a create record still answers, accepted", func(t *testing.T) {
		ev := created(11)
		rev := write(t, key(11), subjects.ConfirmedRecord(ev, 0), 0)
		restore := testkit.RefuseConnections(t, ten.DBName)
		got, err := lookup.Find(ctx, ten, ev.Ticket, tenants.ReadRowUnderCreate)
		if err != nil || !got.InSlots || !got.RowUnavailable || got.InDB || got.Revision != rev {
			t.Fatalf("Find while the database refuses: %+v %v, want the record and RowUnavailable", got, err)
		}
		wantLatest(t, got, ev, subjects.StatusAccepted)
		// A ticket only the database has cannot be answered meanwhile.
		if _, err := lookup.Find(ctx, ten, aged.Ticket, 0); !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("Find of a row-only ticket while the database refuses: %v, want ErrUnavailable", err)
		}
		restore()
	})

	t.Run("a bucket that cannot be read is unavailable", func(t *testing.T) {
		ev := aged
		if err := e.js.DeleteKeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(ten.ID, shards))); err != nil {
			t.Fatal(err)
		}
		// The handle opened before the delete: reads fail.
		stale := lookup
		stale.Slots = func(context.Context, string) (jetstream.KeyValue, error) { return kv, nil }
		stale.SlotTimeout = time.Second
		if _, err := stale.Find(ctx, ten, ev.Ticket, 0); !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("Find on a deleted bucket: %v, want ErrUnavailable", err)
		}
		failing := lookup
		failing.Slots = func(context.Context, string) (jetstream.KeyValue, error) { return nil, context.DeadlineExceeded }
		if _, err := failing.Find(ctx, ten, ev.Ticket, 0); !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("Find when the bucket cannot be opened: %v, want ErrUnavailable", err)
		}
	})
}
