package testkit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Run runs a long-running part's Run method in the background, as cmd/tms
// supervises it, until the returned stop is called or the test ends,
// whichever comes first. Stopping cancels run's context and waits for it
// to return, so no goroutine outlives the test (goleak checks). Every
// part returns nil once its context is done, so any error, a
// context.Canceled included, fails the test, naming what ran.
func Run(t testing.TB, what string, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := run(ctx); err != nil {
			t.Errorf("%s.Run: %v", what, err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// Part is a long-running part that says when it serves: the ETA
// responder, the tenant registry, sessions.
type Part interface {
	Run(ctx context.Context) error
	// Started is closed once the part serves.
	Started() <-chan struct{}
}

// Start runs p as Run does and waits up to timeout until it has started.
func Start(t testing.TB, what string, p Part, timeout time.Duration) (stop func()) {
	t.Helper()
	stop = Run(t, what, p.Run)
	WaitStarted(t, timeout, p.Started(), what)
	return stop
}

// WaitStarted waits until started is closed, failing the test after
// timeout: for parts that say when they serve with a Started channel
// (river's habit) instead of a flag to poll.
func WaitStarted(t testing.TB, timeout time.Duration, started <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-started:
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s to start", timeout, what)
	}
}
