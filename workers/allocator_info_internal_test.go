package workers

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestRateCounter: the rate is the records settled over the last ten
// seconds, a second; older seconds drop out, the total stays.
func TestRateCounter(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	r := newRateCounter(clock)
	if total, rate := r.read(); total != 0 || rate != 0 {
		t.Fatalf("fresh: %d, %v", total, rate)
	}
	for range 10 {
		r.add(30)
		advance(time.Second)
	}
	// Ten seconds of 30: the second now under way has nothing yet, so
	// nine of them are in the window.
	if total, rate := r.read(); total != 300 || rate != 27 {
		t.Fatalf("after 10 s of 30/s: total %d rate %v, want 300 and 27", total, rate)
	}
	r.add(30)
	if _, rate := r.read(); rate != 30 {
		t.Fatalf("steady 30/s: rate %v", rate)
	}
	advance(5 * time.Second)
	if _, rate := r.read(); rate != 15 {
		t.Fatalf("five quiet seconds later: rate %v, want 15", rate)
	}
	advance(time.Hour)
	if total, rate := r.read(); total != 330 || rate != 0 {
		t.Fatalf("an hour later: total %d rate %v, want 330 and 0", total, rate)
	}
	r.add(0)
	r.add(-5)
	if total, _ := r.read(); total != 330 {
		t.Fatalf("adding nothing changed the total to %d", total)
	}
}

// TestFlightLimit: places are taken up to the limit; a raised limit lets
// waiters on, a lowered one holds back new takers until enough places
// are given back.
func TestFlightLimit(t *testing.T) {
	t.Parallel()
	l := newFlightLimit(2)
	ctx := context.Background()
	for i := range 2 {
		if !l.acquire(ctx) {
			t.Fatalf("place %d of two refused under a limit of two", i+1)
		}
	}
	got := make(chan bool)
	go func() { got <- l.acquire(ctx) }()
	select {
	case <-got:
		t.Fatal("a third place taken under a limit of two")
	default:
	}
	l.setLimit(3)
	if !<-got {
		t.Fatal("the raised limit did not let the waiter on")
	}
	l.setLimit(1)
	l.release()
	l.release()
	if n := l.inFlight(); n != 1 {
		t.Fatalf("%d in flight, want 1", n)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- l.acquire(cctx) }()
	cancel()
	if <-got {
		t.Fatal("a place taken over the lowered limit")
	}
	l.release()
	if !l.acquire(ctx) {
		t.Fatal("no place under the limit")
	}
}

// TestDrainersFollow: the pool starts drainers for a rise, stops the
// excess between batches for a fall, takes back stop tokens not yet used
// when it rises again, and every drainer ends once the queues close.
func TestDrainersFollow(t *testing.T) {
	t.Parallel()
	a := &Allocator{batch: 1}
	qs := newTenantQueues(16)
	d := newDrainers(context.Background(), a, qs)
	d.set(5)
	d.set(2)
	d.set(4)
	d.mu.Lock()
	want, tokens := d.want, len(d.stop)
	d.mu.Unlock()
	// 5 started, 3 told to stop, 2 of those taken back (if not yet used).
	if want != 4 || tokens > 1 {
		t.Fatalf("want %d, %d stop tokens; want 4 and at most 1", want, tokens)
	}
	d.close()
	d.set(10) // closed: nothing starts
	qs.close()
	done := make(chan struct{})
	go func() { d.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drainers did not end once the queues closed")
	}
}
