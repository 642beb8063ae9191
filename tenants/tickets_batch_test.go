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

// TestApplyCreatedBatch: a batch of creates is written as ApplyCreated
// writes them one by one: every ticket allocated with its slot
// unavailable; a repeat of the batch changes nothing; a ticket whose
// minute another live ticket holds (in the database, or earlier in the
// same batch) is a *SlotConflictError naming the holder and is not
// written, while the rest of the batch is; a cancel that came first keeps
// its row cancelled; an event no write may accept, or an agent the
// database lacks, fails alone.
func TestApplyCreatedBatch(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)

	var batch []subjects.TicketEvent
	for i := range 40 {
		batch = append(batch, e.event(subjects.TicketCreated, fmt.Sprintf("t-batch-%02d", i), i))
	}
	for round := range 2 { // the second is a redelivery of the same batch
		res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, batch)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i, r := range res {
			if r != nil {
				t.Errorf("round %d: event %d: %v", round, i, r)
			}
		}
	}
	for _, ev := range batch {
		if n := e.count(t, ev.Ticket); n != 1 {
			t.Errorf("%s: %d rows", ev.Ticket, n)
		}
		e.mustGet(t, ev.Ticket, subjects.StatusAllocated)
		if got := e.slotState(t, ev); got != "unavailable" {
			t.Errorf("%s: slot %q, want unavailable", ev.Ticket, got)
		}
	}

	// Minute 40 is held in the database by t-holder; minute 41 by the
	// batch's own first event; t-cancelled was cancelled before its create
	// arrives; one event is malformed, one names an agent the database
	// does not have.
	holder := e.event(subjects.TicketCreated, "t-holder", 40)
	if err := e.tickets.ApplyCreated(ctx, e.ten, holder); err != nil {
		t.Fatal(err)
	}
	cancelled := e.event(subjects.TicketCancelled, "t-cancelled", 42)
	if err := e.tickets.ApplyCancelled(ctx, e.ten, cancelled); err != nil {
		t.Fatal(err)
	}
	created := cancelled
	created.Event, created.CancelledAt = subjects.TicketCreated, nil
	malformed := e.event(subjects.TicketCreated, "t-malformed", 43)
	malformed.SlotTime = malformed.SlotTime.Add(time.Second)
	stranger := e.event(subjects.TicketCreated, "t-stranger", 44)
	stranger.Agent = "a-not-in-this-database"
	mixed := []subjects.TicketEvent{
		e.event(subjects.TicketCreated, "t-taken", 40),
		e.event(subjects.TicketCreated, "t-first", 41),
		e.event(subjects.TicketCreated, "t-second", 41),
		created,
		malformed,
		stranger,
		e.event(subjects.TicketCreated, "t-free", 45),
	}
	res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, mixed)
	if err != nil {
		t.Fatal(err)
	}
	conflictWith := func(i int, want string) {
		t.Helper()
		var sc *tenants.SlotConflictError
		if !errors.As(res[i], &sc) || sc.Ticket != want {
			t.Errorf("%s: %v, want a slot conflict with %s", mixed[i].Ticket, res[i], want)
		}
		if n := e.count(t, mixed[i].Ticket); n != 0 {
			t.Errorf("%s: refused but %d rows written", mixed[i].Ticket, n)
		}
	}
	conflictWith(0, "t-holder")
	conflictWith(2, "t-first")
	for _, i := range []int{1, 6} {
		if res[i] != nil {
			t.Errorf("%s: %v", mixed[i].Ticket, res[i])
		}
		e.mustGet(t, mixed[i].Ticket, subjects.StatusAllocated)
	}
	if res[3] != nil {
		t.Errorf("create after its cancel: %v", res[3])
	}
	e.mustGet(t, "t-cancelled", subjects.StatusCancelled)
	for _, i := range []int{4, 5} {
		if !errors.Is(res[i], tenants.ErrInvalidTicket) {
			t.Errorf("%s: %v, want ErrInvalidTicket", mixed[i].Ticket, res[i])
		}
		if n := e.count(t, mixed[i].Ticket); n != 0 {
			t.Errorf("%s: %d rows", mixed[i].Ticket, n)
		}
	}
}

// TestApplyCreatedBatchConcurrent: batches that share minutes, written
// at once from several goroutines (allocators in several processes),
// leave exactly one live ticket per minute, and every refusal names the
// ticket that holds it.
func TestApplyCreatedBatchConcurrent(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	const writers, minutes = 4, 30
	results := make([][]error, writers)
	batches := make([][]subjects.TicketEvent, writers)
	var wg sync.WaitGroup
	for w := range writers {
		for m := range minutes {
			// Each writer walks the minutes in another order.
			batches[w] = append(batches[w], e.event(subjects.TicketCreated, fmt.Sprintf("t-w%d-m%02d", w, m), (m*(w+1))%minutes))
		}
		wg.Go(func() {
			res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, batches[w])
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
			}
			results[w] = res
		})
	}
	wg.Wait()
	holders := map[time.Time]string{}
	for w := range writers {
		for i, r := range results[w] {
			ev := batches[w][i]
			var sc *tenants.SlotConflictError
			switch {
			case r == nil:
				if prev, ok := holders[ev.SlotTime]; ok {
					t.Errorf("minute %s written by %s and %s", ev.SlotTime.Format(time.RFC3339), prev, ev.Ticket)
				}
				holders[ev.SlotTime] = ev.Ticket
			case !errors.As(r, &sc):
				t.Errorf("%s: %v", ev.Ticket, r)
			}
		}
	}
	if len(holders) != minutes {
		t.Errorf("%d minutes have a ticket, want %d", len(holders), minutes)
	}
	for _, id := range holders {
		e.mustGet(t, id, subjects.StatusAllocated)
	}
}

// TestApplyCreatedBatchUnavailable: a database that refuses connections
// fails the whole batch with ErrUnavailable and writes nothing; the same
// batch is written once it accepts them again.
func TestApplyCreatedBatchUnavailable(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	batch := []subjects.TicketEvent{e.event(subjects.TicketCreated, "t-out-1", 0), e.event(subjects.TicketCreated, "t-out-2", 1)}
	restore := testkit.RefuseConnections(t, e.ten.DBName)
	for range 2 { // a pooled connection killed under us, then a refused dial
		if _, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, batch); !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("batch during outage: %v, want ErrUnavailable", err)
		}
	}
	restore()
	testkit.Eventually(t, 20*time.Second, func() bool {
		res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, batch)
		return err == nil && res[0] == nil && res[1] == nil
	}, "the batch after the outage")
	for _, ev := range batch {
		e.mustGet(t, ev.Ticket, subjects.StatusAllocated)
	}
}

// BenchmarkApplyCreated is the allocators' write path, per ticket: one
// transaction per ticket (ApplyCreated) against batches of 10 and 100
// (ApplyCreatedBatch), on the local Postgres. ns/op is per ticket.
func BenchmarkApplyCreated(b *testing.B) {
	e := newTicketEnv(b)
	ctx := testkit.Context(b, 10*time.Minute)
	next := 0
	events := func(n int) []subjects.TicketEvent {
		evs := make([]subjects.TicketEvent, n)
		for i := range evs {
			evs[i] = e.event(subjects.TicketCreated, fmt.Sprintf("t-bench-%d", next), next)
			next++
		}
		return evs
	}
	b.Run("one-by-one", func(b *testing.B) {
		for _, ev := range events(b.N) {
			if err := e.tickets.ApplyCreated(ctx, e.ten, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, size := range []int{10, 100} {
		b.Run(fmt.Sprintf("batch-%d", size), func(b *testing.B) {
			evs := events(b.N)
			for start := 0; start < len(evs); start += size {
				res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, evs[start:min(start+size, len(evs))])
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					if r != nil {
						b.Fatal(r)
					}
				}
			}
		})
	}
}
