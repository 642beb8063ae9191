package ingress

import (
	"fmt"
	"testing"
	"time"

	"tms/ops/testkit"
)

func TestKeyedLimiterBurstThenRate(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	k := newKeyedLimiter(2, 5, clock.Now) // 2/s, bursts of 5

	for i := range 5 {
		if _, ok := k.allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	// Refusals take nothing: however many there are, the next token is
	// half a second away.
	for range 50 {
		wait, ok := k.allow("a")
		if ok || wait != 500*time.Millisecond {
			t.Fatalf("over the burst: ok %v wait %s, want refused with 500ms", ok, wait)
		}
	}
	if _, ok := k.allow("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	clock.Advance(500 * time.Millisecond)
	if _, ok := k.allow("a"); !ok {
		t.Fatal("the token refilled after 500ms was refused")
	}
	if _, ok := k.allow("a"); ok {
		t.Fatal("a second token after 500ms at 2/s")
	}
}

func TestKeyedLimiterOffAndDefaults(t *testing.T) {
	t.Parallel()
	if k := newKeyedLimiter(0, 10, time.Now); k != nil {
		t.Fatal("rate 0 made a limiter")
	}
	var off *keyedLimiter
	for range 1000 {
		if _, ok := off.allow("x"); !ok {
			t.Fatal("no limiter refused")
		}
	}
	clock := testkit.NewClock(time.Now())
	k := newKeyedLimiter(2.5, 0, clock.Now) // burst: 3
	for i := range 3 {
		if _, ok := k.allow("a"); !ok {
			t.Fatalf("default burst: request %d refused", i+1)
		}
	}
	if _, ok := k.allow("a"); ok {
		t.Fatal("default burst of 2.5/s let a 4th through")
	}
}

// Thousands of tenants that each came once leave no buckets behind once
// theirs have refilled, and an evicted key starts with a full bucket,
// which is what it would have had anyway.
func TestKeyedLimiterEvictsIdleBuckets(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now())
	k := newKeyedLimiter(10, 20, clock.Now) // refills in 2 s: idle bound is limiterMinIdle
	for i := range 5000 {
		k.allow(fmt.Sprintf("tenant-%d", i))
	}
	if n := k.size(); n != 5000 {
		t.Fatalf("%d buckets, want 5000", n)
	}
	clock.Advance(limiterMinIdle / 2)
	k.allow("busy")
	if n := k.size(); n != 5001 {
		t.Fatalf("buckets dropped before they were idle for %s: %d left", limiterMinIdle, n)
	}
	clock.Advance(limiterMinIdle/2 + limiterSweepEvery)
	k.allow("busy")
	if n := k.size(); n != 1 {
		t.Fatalf("%d buckets after every other key was idle past %s, want 1", n, limiterMinIdle)
	}
	for i := range 20 {
		if _, ok := k.allow("tenant-1"); !ok {
			t.Fatalf("an evicted key's new bucket refused request %d of its burst", i+1)
		}
	}
}

func TestRetryAfterRoundsUpToWholeSeconds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		wait time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {90 * time.Second, 90}} {
		if got := retryAfter(c.wait); got != c.want {
			t.Errorf("retryAfter(%s) = %d, want %d", c.wait, got, c.want)
		}
	}
}

// A key that keeps failing may fail freely up to a third of the lockout
// count, then once a second, then is locked out; a failure is forgotten
// for each lockout/hard without failures. Other keys are not touched.
func TestFailureLimiterSlowsThenLocksOut(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := newFailureLimiter(9, 90*time.Second, clock.Now) // soft 3, forget 10s
	try := func(key string) (time.Duration, bool) { return f.check(key) }

	for i := range 3 {
		if _, ok := try("a"); !ok {
			t.Fatalf("attempt %d refused under the soft count", i+1)
		}
		f.fail("a")
	}
	// Slowed: one try per second after the last failure.
	if wait, ok := try("a"); ok || wait != time.Second {
		t.Fatalf("at the soft count: ok %v wait %s, want refused for 1s", ok, wait)
	}
	clock.Advance(400 * time.Millisecond)
	if wait, ok := try("a"); ok || wait != 600*time.Millisecond {
		t.Fatalf("0.4s after the last failure: ok %v wait %s, want 600ms", ok, wait)
	}
	if _, ok := try("b"); !ok {
		t.Fatal("another key is slowed by a's failures")
	}
	for i := 3; i < 9; i++ {
		clock.Advance(time.Second)
		if _, ok := try("a"); !ok {
			t.Fatalf("slowed attempt %d refused after 1s", i+1)
		}
		f.fail("a")
	}
	// Locked out for the lockout, whatever the waits in between.
	for _, step := range []time.Duration{0, time.Second, 30 * time.Second} {
		clock.Advance(step)
		if _, ok := try("a"); ok {
			t.Fatalf("locked-out key allowed %s into the lockout", step)
		}
	}
	wait, _ := try("a")
	if wait != 90*time.Second-31*time.Second {
		t.Fatalf("lockout wait %s, want 59s", wait)
	}
	clock.Advance(wait)
	if _, ok := try("a"); !ok {
		t.Fatal("still locked out after the lockout")
	}
	// One more failure slows it again at once; six more lock it out.
	f.fail("a")
	if _, ok := try("a"); ok {
		t.Fatal("not slowed by a failure just after its lockout")
	}

	// A slow failer is forgotten: a failure every 10s never reaches the
	// soft count.
	for i := range 20 {
		if _, ok := try("c"); !ok {
			t.Fatalf("failure %d at one per 10s refused", i+1)
		}
		f.fail("c")
		clock.Advance(10 * time.Second)
	}
	if newFailureLimiter(0, time.Minute, clock.Now) != nil {
		t.Fatal("hard 0 made a limiter")
	}
}

// Trust lasts its TTL.
func TestTrustSetExpires(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newTrustSet(clock.Now)
	s.add("c1", "192.0.2.1")
	if !s.has("c1", "192.0.2.1") || s.has("c1", "192.0.2.2") || s.has("c2", "192.0.2.1") {
		t.Fatal("trust is not per client_id and address")
	}
	clock.Advance(trustTTL)
	if s.has("c1", "192.0.2.1") {
		t.Fatal("trust outlived its TTL")
	}
}

// The keys held are bounded: past maxFailureKeys a new key is not
// tracked (the address limit still applies), and once the old ones have
// drained a sweep makes room again.
func TestFailureLimiterIsBounded(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := newFailureLimiter(3, 30*time.Second, clock.Now) // soft 1, forget 10s
	for i := range maxFailureKeys {
		f.fail(fmt.Sprintf("k%d", i))
	}
	f.fail("new")
	if _, ok := f.check("new"); !ok || len(f.keys) != maxFailureKeys {
		t.Fatalf("a key past the bound is tracked: %d keys", len(f.keys))
	}
	clock.Advance(10 * time.Second) // every level drained
	f.fail("new")
	if len(f.keys) != 1 {
		t.Fatalf("%d keys after the old ones drained, want 1", len(f.keys))
	}
	if _, ok := f.check("new"); ok {
		t.Fatal("the new key is not tracked once there is room")
	}
}
