package workers_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// Moves as feasibility admission and the re-plan write them: one atomic
// batch in the tenant's shard, the moved ticket's record at its new key
// first (the last hop of a chain first), then the record that takes its
// old minute (a new ticket's, or a vacated one) carrying Moved. The tests
// write the same records with plain puts, in the same order.

// movedTo is ev (a ticket's created event) moved to agent's minute.
func movedTo(ev subjects.TicketEvent, agent string, minute time.Time) subjects.TicketEvent {
	ev.Agent, ev.SlotTime = agent, minute
	return ev
}

// move writes ev's record at its (new) key, its moves-th move; from, when
// set, is the ticket that held that minute and moved away first (a hop of
// a chain).
func (tn *allocTenant) move(t testing.TB, ev subjects.TicketEvent, moves int, from *subjects.SlotMove) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any {
		rec := subjects.ConfirmedRecord(ev, prev)
		rec.Moves, rec.Moved = moves, from
		return rec
	})
}

// confirmOver writes ev's confirmed record over the minute that the
// ticket of away left.
func (tn *allocTenant) confirmOver(t testing.TB, ev subjects.TicketEvent, away *subjects.SlotMove) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any {
		rec := subjects.ConfirmedRecord(ev, prev)
		rec.Moved = away
		return rec
	})
}

// vacate writes the vacated record of old's minute (old: the ticket's
// event as it was there), its ticket gone to to.
func (tn *allocTenant) vacate(t testing.TB, old, to subjects.TicketEvent) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(old), func(prev uint64) any {
		return subjects.VacatedRecord(subjects.ConfirmedRecord(old, 0), to.Agent, to.SlotTime, prev)
	})
}

// away is the Moved of the record that takes ev's minute once ev's ticket
// went to to.
func away(to subjects.TicketEvent) *subjects.SlotMove {
	return &subjects.SlotMove{Ticket: to.Ticket, Agent: to.Agent, SlotTime: to.SlotTime}
}

// ticketAt checks that id's row is allocated at agent's minute with moves.
func (tn *allocTenant) ticketAt(t testing.TB, id string, at subjects.TicketEvent, moves int) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	row, err := tn.e.tickets.Get(ctx, tn.ten, id)
	if err != nil {
		t.Fatalf("ticket %s: %v", id, err)
	}
	if row.Status != subjects.StatusAllocated || row.Agent != at.Agent || !row.SlotTime.Equal(at.SlotTime) || row.Moves != moves {
		t.Errorf("ticket %s is %s at %s %s with %d moves; want allocated at %s %s with %d", id, row.Status, row.Agent,
			row.SlotTime.Format(time.RFC3339), row.Moves, at.Agent, at.SlotTime.Format(time.RFC3339), moves)
	}
	n := tn.mustQuery(t, `SELECT count(*) FROM tickets t JOIN slots s ON s.id = t.slot_id
		WHERE t.id = $1 AND s.sa_id = t.sa_id AND s.time = t.start_time AND s.available = 'unavailable'
		AND t.end_time = t.start_time + interval '1 minute'`, id)
	if n != 1 {
		t.Errorf("ticket %s: its slot row does not follow it (or is not unavailable, or end_time is off)", id)
	}
}

// checkSlots checks that exactly the minutes of the live rows are
// unavailable.
func (tn *allocTenant) checkSlots(t testing.TB) {
	t.Helper()
	bad := tn.mustQuery(t, `SELECT count(*) FROM slots s WHERE (s.available = 'unavailable') <> EXISTS (
		SELECT 1 FROM tickets t WHERE t.sa_id = s.sa_id AND t.start_time = s.time AND t.status <> 'cancelled')`)
	if bad != 0 {
		t.Errorf("%d slots rows disagree with the live tickets", bad)
	}
}

// plainCounter reads a registered counter without labels (0 when absent).
func plainCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// moveEvents subscribes to tn's moved events.
func (tn *allocTenant) moveEvents(t testing.TB) <-chan subjects.MoveEvent {
	t.Helper()
	nc := tn.e.nats.Connect(t)
	ch := make(chan subjects.MoveEvent, 64)
	sub, err := nc.Subscribe(subjects.EventSubject(tn.ten.ID, subjects.EventMoved), func(m *nats.Msg) {
		var ev subjects.MoveEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("moved event %q: %v", m.Data, err)
			return
		}
		ch <- ev
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// nextMove is the next moved event, failing after a while.
func nextMove(t testing.TB, ch <-chan subjects.MoveEvent) subjects.MoveEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no moved event")
	}
	return subjects.MoveEvent{}
}

// checkMoveEvent checks one moved event: ticket, from and to, moves.
func checkMoveEvent(t testing.TB, got subjects.MoveEvent, from, to subjects.TicketEvent, moves int) {
	t.Helper()
	if got.Event != subjects.EventMoved || got.Tenant != to.Tenant || got.Ticket != to.Ticket || got.Type != to.Type ||
		got.Agent != to.Agent || !got.SlotTime.Equal(to.SlotTime) || got.FromAgent != from.Agent ||
		!got.FromSlotTime.Equal(from.SlotTime) || !got.Deadline.Equal(to.Deadline) || got.Moves != moves {
		t.Errorf("moved event %+v; want %s from %s %s to %s %s, moves %d", got, to.Ticket, from.Agent,
			from.SlotTime.Format(time.RFC3339), to.Agent, to.SlotTime.Format(time.RFC3339), moves)
	}
}

// TestAllocatorMove: T is admitted and written; feasibility admission
// then moves it to another agent's later minute and gives its minute to
// N (T's record at the new key, then N's carrying Moved). T's row follows
// (one move), N takes T's old minute, the slots rows say which minutes
// are taken, a moved event with where T was and is goes out, and the
// move is counted.
func TestAllocatorMove(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	events := e.moveEvents(t)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{metrics: metrics})
	x := e.event("movet", 0)
	e.confirm(t, x)
	e.waitRows(t, 1)

	y := movedTo(x, e.agents[1], x.SlotTime.Add(3*time.Minute))
	n := e.event("newn", 0) // T's old minute
	e.move(t, y, 1, nil)
	e.confirmOver(t, n, away(y))
	e.waitRows(t, 2)
	e.waitConsumed(t)
	e.ticketAt(t, x.Ticket, y, 1)
	e.ticketAt(t, n.Ticket, n, 0)
	e.checkSlots(t)
	checkMoveEvent(t, nextMove(t, events), x, y, 1)
	if got := plainCounter(t, metrics, "tms_allocator_moves_total"); got != 1 {
		t.Errorf("moves_total = %v, want 1", got)
	}
	if got := counterValue(t, metrics, "tms_allocator_processed_total", "moved"); got != 1 {
		t.Errorf("processed{moved} = %v, want 1", got)
	}
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: the batch order conflicted", got)
	}
}

// TestAllocatorMoveChain: records an allocator reads in one go (it
// starts after they are written): T and T2 admitted; then one batch moves
// T2 on (its record first), T into T2's old minute (carrying Moved) and
// gives T's minute to N; then a re-plan moves T a second time and leaves
// its minute vacated. Every row ends at its newest record (T with two
// moves), the vacated minute is free, nothing conflicts. Replaying every
// record from the start (a new consumer: the old create of T, its first
// move after its second) changes nothing and publishes nothing. The
// look-up follows T from its admission key, re-taken by N, through two
// moves.
func TestAllocatorMoveChain(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	events := e.moveEvents(t)
	x := e.event("chaint", 0)   // agent 0, first minute
	y2 := e.event("chaint2", 1) // agent 1, first minute
	e.confirm(t, x)
	e.confirm(t, y2)

	z2 := movedTo(y2, e.agents[1], y2.SlotTime.Add(5*time.Minute))
	y := movedTo(x, y2.Agent, y2.SlotTime) // T into T2's old minute
	n := e.event("chainn", 0)              // T's old minute
	e.move(t, z2, 1, nil)
	e.move(t, y, 1, away(z2))
	e.confirmOver(t, n, away(y))
	w := movedTo(x, e.agents[0], x.SlotTime.Add(7*time.Minute))
	e.move(t, w, 2, nil)
	e.vacate(t, y, w)

	metrics := prometheus.NewRegistry()
	stop := e.start(t, allocOpts{metrics: metrics, concurrency: 1})
	e.waitRows(t, 3)
	e.waitConsumed(t)
	stop()
	e.ticketAt(t, x.Ticket, w, 2)
	e.ticketAt(t, y2.Ticket, z2, 1)
	e.ticketAt(t, n.Ticket, n, 0)
	e.checkSlots(t)
	if got := e.rows(t); got != 3 {
		t.Errorf("%d rows, want 3", got)
	}
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: the batch order conflicted", got)
	}
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.SlotVacated); got != 1 {
		t.Errorf("processed{vacated} = %v, want 1", got)
	}
	// In stream order: T2 moved, T moved into its minute, T moved again.
	checkMoveEvent(t, nextMove(t, events), y2, z2, 1)
	checkMoveEvent(t, nextMove(t, events), x, y, 1)
	checkMoveEvent(t, nextMove(t, events), y, w, 2)

	// Every record again, from the first (a new consumer).
	ctx := testkit.Context(t, 30*time.Second)
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	if err := e.js.DeleteConsumer(ctx, subjects.SlotStream(shard), subjects.AllocatorConsumer(shard)); err != nil {
		t.Fatal(err)
	}
	again := prometheus.NewRegistry()
	e.start(t, allocOpts{metrics: again})
	testkit.Eventually(t, 30*time.Second, func() bool {
		return counterValue(t, again, "tms_allocator_processed_total", subjects.SlotVacated) == 1
	}, "the replay handled")
	e.waitConsumed(t)
	e.ticketAt(t, x.Ticket, w, 2)
	e.ticketAt(t, y2.Ticket, z2, 1)
	e.ticketAt(t, n.Ticket, n, 0)
	e.checkSlots(t)
	if got := plainCounter(t, again, "tms_allocator_moves_total"); got != 0 {
		t.Errorf("the replay applied %v moves", got)
	}
	if len(events) != 0 {
		t.Errorf("the replay published %d moved events", len(events))
	}
	// The same, one by one at the tenant database: the old create, the
	// first move.
	if err := e.tickets.ApplyCreated(ctx, e.ten, x); err != nil {
		t.Fatal(err)
	}
	if res, err := e.tickets.ApplyMoved(ctx, e.ten, y, 1); err != nil || res.Applied {
		t.Fatalf("first move after the second: %+v, %v", res, err)
	}
	if res, err := e.tickets.ApplyMoved(ctx, e.ten, w, 2); err != nil || res.Applied {
		t.Fatalf("second move again: %+v, %v", res, err)
	}
	e.ticketAt(t, x.Ticket, w, 2)

	lookup := tenants.TicketLookup{Rows: e.tickets,
		Slots: func(context.Context, string) (jetstream.KeyValue, error) { return e.kv(), nil }}
	for _, c := range []struct {
		id    string
		at    subjects.TicketEvent
		moves int
	}{{x.Ticket, w, 2}, {y2.Ticket, z2, 1}, {n.Ticket, n, 0}} {
		st, err := lookup.Find(ctx, e.ten, c.id, 0)
		if err != nil || !st.InSlots || st.Event.Agent != c.at.Agent || !st.Event.SlotTime.Equal(c.at.SlotTime) ||
			st.Moves != c.moves || st.Event.Event != subjects.TicketCreated {
			t.Errorf("lookup of %s: %+v, %v; want at %s %s with %d moves", c.id, st, err, c.at.Agent,
				c.at.SlotTime.Format(time.RFC3339), c.moves)
		}
		st, err = lookup.Find(ctx, e.ten, c.id, tenants.ReadRowUnderCreate)
		ev, status, found := st.Latest()
		if err != nil || !found || status != subjects.StatusAllocated || ev.Agent != c.at.Agent || !ev.SlotTime.Equal(c.at.SlotTime) {
			t.Errorf("lookup of %s with its row: %+v %s %v, %v", c.id, ev, status, found, err)
		}
	}
}

// stall fetches the next n records of tn's shard as a stalled process
// would, holding them (a long ack wait: they do not come back by
// themselves) until the caller naks them.
func (tn *allocTenant) stall(t testing.TB, n int) []jetstream.Msg {
	t.Helper()
	ctx := testkit.Context(t, 20*time.Second)
	shard := subjects.SlotShard(tn.ten.ID, tn.e.shards)
	cons, err := tn.e.js.Consumer(ctx, subjects.SlotStream(shard), subjects.AllocatorConsumer(shard))
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(n, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range fetched.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d records, want %d: %v", len(msgs), n, fetched.Error())
	}
	return msgs
}

// TestAllocatorMovedHolder: records handled out of stream order, as
// several processes or a redelivery hand them out.
//   - N's create comes while T's move waits in a stalled process: the
//     database refuses N (T still holds the minute there); N's record
//     says T moved, so T's newest record is read and applied first, and
//     N is written without a retry.
//   - T2's create and move both wait while N2 takes T2's old minute; the
//     create, when it comes, is refused (N2 holds the minute), finds in
//     the records after it that T2 moved, applies the move (T2 written
//     where it went), and has nothing left to do.
func TestAllocatorMovedHolder(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	events := e.moveEvents(t)
	x := e.event("holdert", 0)
	e.confirm(t, x)
	stop := e.start(t, allocOpts{concurrency: 1, ackWait: 30 * time.Second})
	e.waitRows(t, 1)
	e.waitConsumed(t)
	stop()

	y := movedTo(x, e.agents[1], x.SlotTime.Add(4*time.Minute))
	n := e.event("takern", 0)
	e.move(t, y, 1, nil)
	e.confirmOver(t, n, away(y))
	stalled := e.stall(t, 1) // T's move
	metrics := prometheus.NewRegistry()
	stop = e.start(t, allocOpts{concurrency: 1, metrics: metrics, ackWait: 30 * time.Second})
	e.waitRows(t, 2)
	e.ticketAt(t, x.Ticket, y, 1)
	e.ticketAt(t, n.Ticket, n, 0)
	checkMoveEvent(t, nextMove(t, events), x, y, 1)
	for _, m := range stalled {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	e.waitConsumed(t)
	stop()
	e.ticketAt(t, x.Ticket, y, 1)
	e.checkSlots(t)
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: N waited for T's move instead of applying it", got)
	}
	if got := plainCounter(t, metrics, "tms_allocator_moves_total"); got != 1 {
		t.Errorf("moves_total = %v, want 1 (the move applied once, its own delivery a no-op)", got)
	}

	x2 := e.event("holdert2", 3) // agent 1, second minute
	y2 := movedTo(x2, e.agents[0], x2.SlotTime.Add(6*time.Minute))
	n2 := e.event("takern2", 3)
	e.confirm(t, x2)
	e.move(t, y2, 1, nil)
	stalled = e.stall(t, 2) // T2's create and move
	e.confirmOver(t, n2, away(y2))
	metrics = prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 1, metrics: metrics, ackWait: 30 * time.Second})
	e.waitRows(t, 3)
	e.ticketAt(t, n2.Ticket, n2, 0)
	for _, m := range stalled {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	e.waitRows(t, 4)
	e.waitConsumed(t)
	e.ticketAt(t, x2.Ticket, y2, 1)
	e.ticketAt(t, n2.Ticket, n2, 0)
	e.checkSlots(t)
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: T2's create waited instead of applying its move", got)
	}
	if got := plainCounter(t, metrics, "tms_allocator_moves_total"); got != 1 {
		t.Errorf("moves_total = %v, want 1", got)
	}
	// Written where it went, without a row before: no from.
	checkMoveEvent(t, nextMove(t, events), subjects.TicketEvent{}, y2, 1)
}

// releaseMoved writes the released record of ev's ticket (ev: where it
// is now), after its moves-th move.
func (tn *allocTenant) releaseMoved(t testing.TB, ev subjects.TicketEvent, moves int) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any {
		rec := subjects.ReleasedRecord(ev, allocT0.Add(time.Minute), prev)
		rec.Moves = moves
		return rec
	})
}

// TestAllocatorParkedMoves: moves, and the cancel of a moved ticket,
// written while their tenant's database refuses connections are parked
// and land the same way once it is back: T's row moved and its old
// minute N's, T3 (moved, then cancelled) cancelled with its minutes free.
func TestAllocatorParkedMoves(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	events := e.moveEvents(t)
	e.start(t, allocOpts{ackWait: 30 * time.Second})
	x := e.event("parkedt", 0)
	e.confirm(t, x)
	e.waitRows(t, 1)
	restore := testkit.RefuseConnections(t, e.ten.DBName)

	y := movedTo(x, e.agents[1], x.SlotTime.Add(4*time.Minute))
	n := e.event("parkedn", 0)
	e.move(t, y, 1, nil)
	e.confirmOver(t, n, away(y))
	x3 := e.event("parkedt3", 3)
	z3 := movedTo(x3, e.agents[0], x3.SlotTime.Add(2*time.Minute))
	e.confirm(t, x3)
	e.move(t, z3, 1, nil)
	e.vacate(t, x3, z3)
	e.releaseMoved(t, z3, 1)
	// Everything but the vacated record (nothing to write) is parked.
	testkit.Eventually(t, 30*time.Second, func() bool { return e.parkedMsgs(t) == 5 }, "5 parked records")
	restore()
	e.waitRows(t, 3)
	e.waitConsumed(t)
	e.ticketAt(t, x.Ticket, y, 1)
	e.ticketAt(t, n.Ticket, n, 0)
	if s := e.status(t, x3.Ticket); s != subjects.StatusCancelled {
		t.Errorf("T3 is %q, want cancelled", s)
	}
	e.checkSlots(t)
	// T3's move may have been applied before its cancel, and published.
	got := nextMove(t, events)
	if got.Ticket == x3.Ticket {
		got = nextMove(t, events)
	}
	checkMoveEvent(t, got, x, y, 1)
}

// TestAllocatorsShareMoves: two allocator processes share the records of
// many moves written while they run (each ticket moved twice, its first
// minute taken by a new ticket, its second vacated), handed out to either
// and so written in any order between them:
// every row ends at its ticket's newest record, the slots rows agree with
// the live tickets, and nothing is dead-lettered.
func TestAllocatorsShareMoves(t *testing.T) {
	t.Parallel()
	const n = 30
	e := newAllocEnv(t, 2, 1)
	minute := func(m int) time.Time { return allocT0.Truncate(time.Minute).Add(time.Duration(m) * time.Minute) }
	type want struct {
		id    string
		at    subjects.TicketEvent
		moves int
	}
	for range 2 {
		e.start(t, allocOpts{concurrency: 2, batchSize: 4, batchWait: time.Millisecond})
	}
	var wants []want
	for k := range n {
		x := e.event("sharet", 2*k) // agent 0, minute k+1
		e.confirm(t, x)
		y := movedTo(x, e.agents[1], minute(k+1))
		nk := e.event("sharen", 2*k)
		e.move(t, y, 1, nil)
		e.confirmOver(t, nk, away(y))
		w := movedTo(x, e.agents[1], minute(k+61))
		e.move(t, w, 2, nil)
		e.vacate(t, y, w)
		wants = append(wants, want{x.Ticket, w, 2}, want{nk.Ticket, nk, 0})
	}
	e.waitRows(t, 2*n)
	e.waitConsumed(t)
	for _, w := range wants {
		e.ticketAt(t, w.id, w.at, w.moves)
	}
	e.checkSlots(t)
	if got := e.rows(t); got != 2*n {
		t.Errorf("%d rows, want %d", got, 2*n)
	}
	if got := e.msgs(t, subjects.StreamDeadLetters); got != 0 {
		t.Errorf("%d dead letters", got)
	}
}
