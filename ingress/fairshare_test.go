package ingress

import (
	"testing"
	"time"

	"tms/ops/testkit"
)

// fairEnv drives a fairShare on a test clock.
type fairEnv struct {
	t     *testing.T
	clock *testkit.Clock
	f     *fairShare
}

func newFairEnv(t *testing.T, max, soft int) *fairEnv {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return &fairEnv{t: t, clock: clock, f: newFairShare(max, soft, 5*time.Millisecond, 100*time.Millisecond, clock.Now)}
}

// hold admits n admissions of tenant and returns their dones; every one
// must be admitted.
func (e *fairEnv) hold(tenant string, n int) []func() {
	e.t.Helper()
	var dones []func()
	for i := range n {
		done, why := e.f.enter(tenant)
		if why != admitted {
			e.t.Fatalf("%s admission %d of %d refused (%d)", tenant, i+1, n, why)
		}
		dones = append(dones, done)
	}
	return dones
}

// saturate makes the next interval's verdict "saturated": after an
// interval with a 1 ms admission (the floor), one with a single admission
// of tenant that takes 20 ms, four times the target.
func (e *fairEnv) saturate(tenant string) {
	e.t.Helper()
	done := e.hold(tenant, 1)[0]
	e.clock.Advance(time.Millisecond)
	done()
	e.clock.Advance(100 * time.Millisecond)
	if _, _, sat := e.f.load(); sat {
		e.t.Fatal("saturated after an interval of one 1ms admission")
	}
	done = e.hold(tenant, 1)[0]
	e.clock.Advance(20 * time.Millisecond)
	done()
	e.clock.Advance(100 * time.Millisecond)
}

// A tenant alone is bounded by max only, saturated or not.
func TestFairShareLoneTenantIsBoundedByMaxOnly(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 50, 10)
	e.saturate("a")
	e.hold("a", 50)
	if _, why := e.f.enter("a"); why != shedMax {
		t.Fatalf("51st admission: %d, want shedMax", why)
	}
	if _, why := e.f.enter("b"); why != shedMax {
		t.Fatalf("another tenant past max: %d, want shedMax", why)
	}
}

// While saturated, a tenant at or above its fair share is refused and one
// under it admitted; once an interval shows no standing queue, everyone
// is admitted again.
func TestFairShareShedsTheTenantOverItsShare(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.saturate("noisy")
	if _, _, sat := e.f.load(); !sat {
		t.Fatal("an interval whose fastest admission took 20ms is not saturated")
	}
	noisy := e.hold("noisy", 12) // not refused while alone
	quiet := e.hold("quiet", 1)
	// 13 in flight, 2 active: a share of 6.
	if _, why := e.f.enter("noisy"); why != shedShare {
		t.Fatalf("noisy over its share: %d, want shedShare", why)
	}
	quiet = append(quiet, e.hold("quiet", 3)...) // up to minShare, whatever the share
	e.hold("third", 2)
	// 18 in flight, 3 active: a share of 6; quiet holds 4.
	quiet = append(quiet, e.hold("quiet", 2)...)
	if _, why := e.f.enter("quiet"); why != shedShare {
		t.Fatalf("quiet at its share: %d, want shedShare", why)
	}

	// The noisy tenant's admissions finish fast: the interval shows no
	// standing queue, and the next verdict is "not saturated".
	for _, done := range noisy[:6] {
		e.clock.Advance(time.Millisecond)
		done()
	}
	e.clock.Advance(100 * time.Millisecond)
	if _, _, sat := e.f.load(); sat {
		t.Fatal("saturated after an interval of 1ms admissions")
	}
	e.hold("noisy", 20)
	for _, done := range quiet {
		done()
	}
}

// A refused tenant does not become active by asking, and a tenant idle
// for activeWindow is no longer active: the one left is alone again.
func TestFairShareActiveTenants(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.saturate("a")
	e.hold("a", 10)
	doneB := e.hold("b", 1)[0]
	if _, why := e.f.enter("a"); why != shedShare {
		t.Fatalf("a over its share beside b: %d", why)
	}
	e.clock.Advance(20 * time.Millisecond) // slow: the queue stands
	doneB()
	// Still active for a second after its last admission.
	if _, active, _ := e.f.load(); active != 2 {
		t.Fatalf("%d active, want 2", active)
	}
	e.clock.Advance(activeWindow)
	if _, active, sat := e.f.load(); active != 1 || !sat {
		t.Fatalf("after b's active window: %d active, saturated %v; want 1, true", active, sat)
	}
	e.hold("a", 10) // alone again: bounded by max only
	for range 3 {
		if _, why := e.f.enter("c"); why != admitted {
			// c has nothing in flight: under minShare, admitted.
			t.Fatalf("c refused: %d", why)
		}
	}
}

// The soft bound counts as saturated without any slow interval.
func TestFairShareSoftBound(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 16)
	e.hold("a", 15)
	e.hold("b", 1)
	if _, why := e.f.enter("a"); why != shedShare {
		t.Fatalf("a over its share at the soft bound: %d", why)
	}
	e.hold("b", 3)
}

// On a machine whose fastest admission is slower than the target assumes,
// the threshold is floorFactor x that floor: admissions 2.5x the floor
// are no standing queue, 5x are.
func TestFairShareFloorRaisesTheTarget(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	run := func(d time.Duration) bool {
		for range 3 {
			done := e.hold("a", 1)[0]
			e.clock.Advance(d)
			done()
		}
		e.clock.Advance(100 * time.Millisecond)
		_, _, sat := e.f.load()
		return sat
	}
	if run(4 * time.Millisecond) {
		t.Fatal("4ms admissions, under the 5ms target, are saturated")
	}
	if run(10 * time.Millisecond) {
		t.Fatal("10ms admissions with a floor of 4ms (threshold 16ms) are saturated")
	}
	if !run(20 * time.Millisecond) {
		t.Fatal("20ms admissions with a floor of 4ms are not saturated")
	}
	// The floor forgets a fast admission after two epochs.
	for range 2 {
		e.clock.Advance(floorEpoch)
		run(20 * time.Millisecond)
	}
	if run(20 * time.Millisecond) {
		t.Fatal("20ms admissions are still saturated after 20s of nothing faster")
	}
}
