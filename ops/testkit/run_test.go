package testkit_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"tms/ops/testkit"
)

// TestRun: stop cancels the part's context and returns only once Run has
// returned; a second stop (the test's cleanup) is a no-op.
func TestRun(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var returned atomic.Bool
	stop := testkit.Run(t, "part", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		returned.Store(true)
		return nil
	})
	testkit.WaitStarted(t, 10*time.Second, started, "part")
	stop()
	if !returned.Load() {
		t.Fatal("stop returned before Run did")
	}
	stop()
}
