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
