package ops_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/ops"
	"tms/ops/testkit"
)

func TestReadiness(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30e9)
	loaded := false
	nc := testkit.StartNATS(t).Connect(t)
	ready := ops.Readiness(
		ops.NATSConnected(nc),
		ops.Flag("registry", func() bool { return loaded }),
		ops.Check{Name: "custom", Check: func(context.Context) error { return nil }},
	)
	err := ready(ctx)
	if !errors.Is(err, ops.ErrNotReady) || !strings.Contains(err.Error(), "registry") || strings.Contains(err.Error(), "nats") {
		t.Fatalf("before load: %v", err)
	}
	loaded = true
	if err := ready(ctx); err != nil {
		t.Fatalf("after load: %v", err)
	}
	nc.Close()
	err = ready(ctx)
	if !errors.Is(err, ops.ErrNotReady) || !strings.Contains(err.Error(), "nats: connection CLOSED") {
		t.Fatalf("after close: %v", err)
	}
}

// TestReadinessDegraded: a failing check that only degrades leaves the
// process ready with a *DegradedError naming it; a failing required check
// still wins, and its error names both.
func TestReadinessDegraded(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30e9)
	var pgErr, regErr error
	ready := ops.Readiness(
		ops.Check{Name: "registry", Check: func(context.Context) error { return regErr }},
		ops.PostgresReachable(func(context.Context) error { return pgErr }),
	)
	if err := ready(ctx); err != nil {
		t.Fatalf("all pass: %v", err)
	}

	// A second ping within the cache's second is not made: a new ready
	// func (fresh cache) sees the outage.
	pgErr = errors.New("dial tcp 127.0.0.1:5432: connect: connection refused\nsecond server down")
	ready = ops.Readiness(
		ops.Check{Name: "registry", Check: func(context.Context) error { return regErr }},
		ops.PostgresReachable(func(context.Context) error { return pgErr }),
	)
	err := ready(ctx)
	var d interface{ Degraded() bool }
	if !errors.As(err, &d) || !d.Degraded() || !errors.Is(err, ops.ErrDegraded) || errors.Is(err, ops.ErrNotReady) {
		t.Fatalf("postgres down: %v (%T), want a degraded error", err, err)
	}
	if want := "postgres: dial tcp 127.0.0.1:5432: connect: connection refused; second server down"; err.Error() != want {
		t.Fatalf("degraded message %q, want %q", err.Error(), want)
	}

	regErr = errors.New("not loaded yet")
	err = ready(ctx)
	if !errors.Is(err, ops.ErrNotReady) || errors.As(err, &d) ||
		!strings.Contains(err.Error(), "registry: not loaded yet") || !strings.Contains(err.Error(), "postgres: dial") {
		t.Fatalf("registry and postgres down: %v", err)
	}
}

// TestCached: probes within the ttl share one real check; concurrent
// probes too; after the ttl the check runs again.
func TestCached(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30e9)
	var calls atomic.Int32
	check := ops.Check{Name: "slow", Check: func(context.Context) error {
		calls.Add(1)
		return errors.New("down")
	}}
	cached := ops.Cached(check, time.Hour)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cached.Check(ctx); err == nil || err.Error() != "down" {
				t.Errorf("cached result %v", err)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d checks for 10 probes within the ttl, want 1", n)
	}
	uncached := ops.Cached(check, 0)
	_ = uncached.Check(ctx)
	_ = uncached.Check(ctx)
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d checks, want 3 with a zero ttl", n)
	}
}

// TestPostgresReachableBounded: a ping that hangs is cut off well inside
// a probe's timeout and reported as degraded.
func TestPostgresReachableBounded(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30e9)
	ready := ops.Readiness(ops.PostgresReachable(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}))
	start := time.Now()
	err := ready(ctx)
	if !errors.Is(err, ops.ErrDegraded) || !strings.Contains(err.Error(), "postgres: context deadline exceeded") {
		t.Fatalf("hanging ping: %v", err)
	}
	// The check's own bound is 1 s; without it the ping would hang until
	// the test's 30 s context. The margin is for a loaded 2-core machine.
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("hanging ping answered after %s", took)
	}
}
