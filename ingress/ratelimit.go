package ingress

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (a tenant id, a client address):
// rate tokens a second, at most burst saved up. The clock is injected and
// every decision is taken at an explicit instant (rate.Limiter's ReserveN
// with a time), so tests drive it without sleeping.
//
// Buckets of keys that have gone quiet are dropped: a bucket idle for
// burst/rate has refilled, and a full bucket is exactly what a new one
// is, so dropping it changes no answer. Thousands of tenants that came
// once therefore cost nothing after a while.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration // drop a bucket unused this long
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time // the last request that asked it
}

// Idle eviction: a bucket is dropped no sooner than limiterMinIdle after
// its last use (or its refill time, if longer, capped at limiterMaxIdle),
// and the map is swept at most once per limiterSweepEvery.
const (
	limiterMinIdle    = time.Minute
	limiterMaxIdle    = 24 * time.Hour
	limiterSweepEvery = 30 * time.Second
)

// newKeyedLimiter returns a limiter of perSecond requests a second per
// key, bursts up to burst (0: perSecond rounded up, at least 1); nil, which
// allows everything, when perSecond is not positive.
func newKeyedLimiter(perSecond float64, burst int, now func() time.Time) *keyedLimiter {
	if perSecond <= 0 || math.IsNaN(perSecond) || math.IsInf(perSecond, 0) {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	// A rate so low that the refill time exceeds limiterMaxIdle gets a
	// free refill when its bucket is dropped: a small leniency for a
	// setting nobody uses, in exchange for a bounded map.
	refill := float64(burst) / perSecond * float64(time.Second)
	idle := limiterMaxIdle
	if refill < float64(limiterMaxIdle) {
		idle = max(limiterMinIdle, time.Duration(refill))
	}
	return &keyedLimiter{
		limit: rate.Limit(perSecond), burst: burst, idle: idle, now: now,
		buckets: map[string]*bucket{},
	}
}

// allow takes one token from key's bucket. When there is none it takes
// nothing and returns how long until one is there.
func (k *keyedLimiter) allow(key string) (wait time.Duration, ok bool) {
	if k == nil {
		return 0, true
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweep(now)
	b := k.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
		k.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		// Only a burst below 1 refuses for ever, and burst is at least 1.
		return time.Second, false
	}
	if d := r.DelayFrom(now); d > 0 {
		// A refused request must not eat into the next one's token.
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweep drops the buckets idle for k.idle, at most once per
// limiterSweepEvery; k.mu is held.
func (k *keyedLimiter) sweep(now time.Time) {
	if now.Sub(k.lastSweep) < limiterSweepEvery {
		return
	}
	k.lastSweep = now
	for key, b := range k.buckets {
		if now.Sub(b.last) >= k.idle {
			delete(k.buckets, key)
		}
	}
}

// size is the number of buckets held.
func (k *keyedLimiter) size() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}

// retryAfter is a wait as a Retry-After value: whole seconds, rounded up,
// at least 1 (a client told 0 would retry at once).
func retryAfter(wait time.Duration) int {
	s := int(math.Ceil(wait.Seconds()))
	return max(1, s)
}
