package tenants_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// TestTicketsMoved: ApplyMoved moves a row to a later move's minute and
// the slots rows with it, never back (a repeat or an older move changes
// nothing), refuses a minute another live ticket holds, leaves a
// cancelled row cancelled, writes a ticket without a row where it went
// (its create, later, changes nothing) and refuses what is not a move.
func TestTicketsMoved(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	at := func(ev subjects.TicketEvent, minutes int) subjects.TicketEvent {
		ev.SlotTime = ticketsT0.Truncate(time.Minute).Add(time.Duration(minutes+1) * time.Minute)
		return ev
	}
	move := func(ev subjects.TicketEvent, moves int) tenants.MoveResult {
		t.Helper()
		res, err := e.tickets.ApplyMoved(ctx, e.ten, ev, moves)
		if err != nil {
			t.Fatalf("ApplyMoved(%s, %d): %v", ev.Ticket, moves, err)
		}
		return res
	}
	wantAt := func(id string, ev subjects.TicketEvent, status string, moves int) {
		t.Helper()
		row := e.mustGet(t, id, status)
		if !row.SlotTime.Equal(ev.SlotTime) || row.Agent != ev.Agent || row.Moves != moves {
			t.Fatalf("ticket %s at %s %s with %d moves, want %s %s with %d", id, row.Agent, row.SlotTime, row.Moves,
				ev.Agent, ev.SlotTime, moves)
		}
	}

	a := e.event(subjects.TicketCreated, "t-moved-a", 0)
	if err := e.tickets.ApplyCreated(ctx, e.ten, a); err != nil {
		t.Fatal(err)
	}
	if res := move(at(a, 2), 1); !res.Applied || res.FromAgent != a.Agent || !res.FromSlotTime.Equal(a.SlotTime) {
		t.Fatalf("first move: %+v", res)
	}
	wantAt(a.Ticket, at(a, 2), subjects.StatusAllocated, 1)
	if s, s2 := e.slotState(t, a), e.slotState(t, at(a, 2)); s != "available" || s2 != "unavailable" {
		t.Fatalf("slots after the move: old %q, new %q", s, s2)
	}
	if res := move(at(a, 2), 1); res.Applied {
		t.Fatalf("a repeat applied: %+v", res)
	}
	if res := move(at(a, 4), 2); !res.Applied || !res.FromSlotTime.Equal(at(a, 2).SlotTime) {
		t.Fatalf("second move: %+v", res)
	}
	if res := move(at(a, 2), 1); res.Applied {
		t.Fatalf("the first move after the second applied: %+v", res)
	}
	if err := e.tickets.ApplyCreated(ctx, e.ten, a); err != nil {
		t.Fatal(err)
	}
	wantAt(a.Ticket, at(a, 4), subjects.StatusAllocated, 2)
	if s, s2 := e.slotState(t, at(a, 2)), e.slotState(t, at(a, 4)); s != "available" || s2 != "unavailable" {
		t.Fatalf("slots after the second move: old %q, new %q", s, s2)
	}

	b := e.event(subjects.TicketCreated, "t-moved-b", 6)
	if err := e.tickets.ApplyCreated(ctx, e.ten, b); err != nil {
		t.Fatal(err)
	}
	_, err := e.tickets.ApplyMoved(ctx, e.ten, at(a, 6), 3)
	if conflict, ok := errors.AsType[*tenants.SlotConflictError](err); !ok || conflict.Ticket != b.Ticket {
		t.Fatalf("a move onto B's minute: %v, want a conflict naming B", err)
	}
	wantAt(a.Ticket, at(a, 4), subjects.StatusAllocated, 2)

	cancel := at(a, 4)
	cancel.Event, cancel.CancelledAt = subjects.TicketCancelled, &ticketsT0
	if err := e.tickets.ApplyCancelled(ctx, e.ten, cancel); err != nil {
		t.Fatal(err)
	}
	if res := move(at(a, 8), 3); res.Applied {
		t.Fatalf("a cancelled ticket moved: %+v", res)
	}
	wantAt(a.Ticket, at(a, 4), subjects.StatusCancelled, 2)
	if s := e.slotState(t, at(a, 4)); s != "available" {
		t.Fatalf("a cancelled moved ticket's slot is %q", s)
	}

	c := e.event(subjects.TicketCreated, "t-moved-c", 10)
	if res := move(at(c, 11), 1); !res.Applied || res.FromAgent != "" || !res.FromSlotTime.IsZero() {
		t.Fatalf("a move without a row: %+v", res)
	}
	if err := e.tickets.ApplyCreated(ctx, e.ten, c); err != nil {
		t.Fatal(err)
	}
	wantAt(c.Ticket, at(c, 11), subjects.StatusAllocated, 1)
	if s := e.slotState(t, c); s == "unavailable" {
		t.Fatalf("the create after its move took its old minute")
	}

	for _, moves := range []int{0, -1} {
		if _, err := e.tickets.ApplyMoved(ctx, e.ten, at(c, 12), moves); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Fatalf("a move with %d moves: %v, want ErrInvalidTicket", moves, err)
		}
	}
	if _, err := e.tickets.ApplyMoved(ctx, e.ten, cancel, 5); !errors.Is(err, tenants.ErrInvalidTicket) {
		t.Fatalf("a move of a cancel: %v, want ErrInvalidTicket", err)
	}
}

// TestTicketsMoveRacesCancel: a ticket's move and its cancel at once, for
// many tickets: every ticket ends cancelled and every slots row it held
// free, whichever came first (a cancel that read the minute before the
// move committed frees the minute the ticket is on, not the one it left).
func TestTicketsMoveRacesCancel(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		ev := e.event(subjects.TicketCreated, fmt.Sprintf("t-race-%02d", i), 2*i)
		if err := e.tickets.ApplyCreated(ctx, e.ten, ev); err != nil {
			t.Fatal(err)
		}
		moved := ev
		moved.SlotTime = ev.SlotTime.Add(time.Minute)
		cancel := moved
		cancel.Event, cancel.CancelledAt = subjects.TicketCancelled, &ticketsT0
		wg.Go(func() {
			if _, err := e.tickets.ApplyMoved(ctx, e.ten, moved, 1); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			if err := e.tickets.ApplyCancelled(ctx, e.ten, cancel); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var live, busy int
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE status <> 'cancelled'`).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM slots WHERE available = 'unavailable'`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if live != 0 || busy != 0 {
		t.Errorf("%d live tickets and %d unavailable slots rows left, want none", live, busy)
	}
}
