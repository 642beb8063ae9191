package ingress

import (
	"context"
	"errors"
	"testing"
	"time"

	"tms/ops/testkit"
)

// At most queueFactor x places wait; the next is shed at once. A waiter
// whose request ends stops waiting.
func TestGateQueueIsBounded(t *testing.T) {
	t.Parallel()
	g := newGate(1, 0, time.Minute)
	release, err := g.enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, queueFactor)
	for range queueFactor {
		go func() {
			_, err := g.enter(ctx)
			errs <- err
		}()
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return g.waiting.Load() == queueFactor }, "the queue to fill")
	if _, err := g.enter(context.Background()); !errors.Is(err, errGateFull) {
		t.Fatalf("entering past a full queue: %v, want errGateFull", err)
	}
	cancel()
	for range queueFactor {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("a waiter whose context ended: %v", err)
		}
	}
	release()
	if g.waiting.Load() != 0 {
		t.Fatalf("%d still waiting", g.waiting.Load())
	}
}
