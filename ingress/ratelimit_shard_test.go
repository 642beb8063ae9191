package ingress

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/ops/testkit"
)

// The sharded limiter decides each key exactly as one map under one lock
// did: with the clock stopped, many goroutines asking for many keys at
// once get exactly burst tokens per key, whichever shard the key is in.
func TestKeyedLimiterShardsKeepEachKeysBurst(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now())
	const keys, burst, workers = 300, 7, 8
	k := newKeyedLimiter(1, burst, clock.Now)
	var allowed [keys]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range keys * 2 * burst {
				key := (i + w*37) % keys
				if _, ok := k.allow(fmt.Sprintf("tenant-%d", key)); ok {
					allowed[key].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for key := range keys {
		if n := allowed[key].Load(); n != burst {
			t.Errorf("tenant-%d: %d requests allowed at one instant, want the burst %d", key, n, burst)
		}
	}
	if n := k.size(); n != keys {
		t.Errorf("%d buckets, want %d", n, keys)
	}
}
