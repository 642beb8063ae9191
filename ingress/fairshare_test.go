package ingress

import (
	"testing"
	"time"

	"tms/ops/testkit"
)

// fairEnv drives a fairShare on a test clock: interval 100 ms, target
// 5 ms.
type fairEnv struct {
	t     *testing.T
	clock *testkit.Clock
	f     *fairShare
}

func newFairEnv(t *testing.T, max, soft int) *fairEnv {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	return &fairEnv{t: t, clock: clock, f: newFairShare(max, soft, 5*time.Millisecond, 100*time.Millisecond, clock.Now)}
}

// admit admits n admissions of tenant, one after the other, each
// finishing at once; every one must be admitted.
func (e *fairEnv) admit(tenant string, n int) {
	e.t.Helper()
	for range n {
		e.hold(tenant, 1)[0]()
	}
}

// interval is one whole interval in which the tenants make the given
// admissions, each taking d.
func (e *fairEnv) interval(d time.Duration, admissions map[string]int) {
	e.t.Helper()
	var dones []func()
	for tenant, n := range admissions {
		dones = append(dones, e.hold(tenant, n)...)
	}
	e.clock.Advance(d)
	for _, done := range dones {
		done()
	}
	e.clock.Advance(100*time.Millisecond - d)
}

// hold admits n admissions of tenant and returns their dones.
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

// refused counts how many of n tries of tenant are refused as over their
// share (admitted ones finish at once).
func (e *fairEnv) refused(tenant string, n int) int {
	e.t.Helper()
	k := 0
	for range n {
		done, why := e.f.enter(tenant)
		switch why {
		case admitted:
			done()
		case shedShare:
			k++
		default:
			e.t.Fatalf("%s: shed %d", tenant, why)
		}
	}
	return k
}

// slowInterval ends the current interval with one admission of tenant
// that took 20 ms, four times the target: a standing queue.
func (e *fairEnv) slowInterval(tenant string) {
	e.t.Helper()
	done := e.hold(tenant, 1)[0]
	e.clock.Advance(20 * time.Millisecond)
	done()
	e.clock.Advance(80 * time.Millisecond)
}

// fastInterval ends the current interval with one 1 ms admission.
func (e *fairEnv) fastInterval(tenant string) {
	e.t.Helper()
	done := e.hold(tenant, 1)[0]
	e.clock.Advance(time.Millisecond)
	done()
	e.clock.Advance(99 * time.Millisecond)
}

// A tenant alone is bounded by max only, saturated or not.
func TestFairShareLoneTenantIsBoundedByMaxOnly(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 50, 10)
	e.fastInterval("a")
	e.interval(20*time.Millisecond, map[string]int{"a": 30})
	if _, _, sat, _ := e.f.state(); !sat {
		t.Fatal("an interval whose fastest admission took 20ms is not saturated")
	}
	e.admit("a", 200)
	e.hold("a", 50)
	if _, why := e.f.enter("a"); why != shedMax {
		t.Fatalf("51st admission in flight: %d, want shedMax", why)
	}
	if _, why := e.f.enter("b"); why != shedMax {
		t.Fatalf("another tenant past max: %d, want shedMax", why)
	}
}

// While saturated, the process admits a limit per interval, split max-min
// fair: the tenant asking for most is held to the level of the split,
// the light one is never refused; the limit grows while the queue is
// gone, and the control ends once demand is well under it.
func TestFairShareShedsTheHeavyTenant(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.fastInterval("noisy") // a floor of 1 ms
	e.interval(20*time.Millisecond, map[string]int{"noisy": 101, "quiet": 4})
	// 105 admitted in a saturated interval: a limit of 0.7 x 105 = 73.5;
	// quiet asked 4, so the max-min split leaves noisy 69.5, under 1.5 x
	// the mean ask (52.5): the level is 78.75.
	_, active, sat, level := e.f.state()
	if !sat || active != 2 || level != 78.75 {
		t.Fatalf("after a saturated interval: saturated %v, %d active, level %v; want true, 2, 78.75", sat, active, level)
	}
	// noisy's sliding count starts at its 101 of the last interval:
	// refused at once; quiet is not.
	if k := e.refused("noisy", 10); k != 10 {
		t.Fatalf("noisy at the start of the interval: %d of 10 refused, want 10", k)
	}
	if k := e.refused("quiet", 4); k != 0 {
		t.Fatalf("quiet: %d of 4 refused", k)
	}
	// Halfway through, 50.5 of its last interval count: admitted up to
	// the level.
	e.clock.Advance(50 * time.Millisecond)
	if k := e.refused("noisy", 30); k != 1 {
		t.Fatalf("noisy halfway: %d of 30 refused, want 1 (admitted 29 up to 78.75)", k)
	}
	// The rest of the interval with no queue: the limit grows by 10% + 1.
	e.clock.Advance(49 * time.Millisecond)
	e.fastInterval("quiet")
	// (The limit grew from 73.5 to 81.85, so the max-min split, which
	// the mean rule no longer lifts, passes its old 69.5.)
	if _, _, sat, level := e.f.state(); sat || level <= 69.5 {
		t.Fatalf("after a fast interval with refusals: saturated %v, level %v; want false and above 69.5", sat, level)
	}
	// A quiet interval, demand far under the limit: control ends.
	e.admit("noisy", 5)
	e.fastInterval("quiet")
	if _, _, _, level := e.f.state(); level != 0 {
		t.Fatalf("level %v after an interval of light demand, want 0 (no control)", level)
	}
	e.admit("noisy", 300)
}

// Tenants that all ask alike are not refused while saturated: none asks
// for more than its share (the level never drops under 1.5 x the mean
// ask), so the fair share sheds nobody; a queue of equal tenants is the
// max-in-flight bound's to hold.
func TestFairShareEqualTenantsAreNotShed(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.fastInterval("a") // a floor of 1 ms
	e.interval(20*time.Millisecond, map[string]int{"a": 60, "b": 60, "c": 60})
	_, _, sat, level := e.f.state()
	// 180 admitted: a limit of 126, an equal split of 42, lifted to 1.5
	// x the mean ask of 60.
	if !sat || level != 90 {
		t.Fatalf("after a saturated interval of equal tenants: saturated %v, level %v; want true, 90", sat, level)
	}
	for _, tenant := range []string{"a", "b", "c"} {
		if k := e.refused(tenant, 25); k != 0 {
			t.Errorf("%s, asking as much as the others: %d of 25 refused", tenant, k)
		}
	}
}

// However low the limit, a tenant admitted fewer than lightLimit times a
// second is never refused, even when its admissions bunch up.
func TestFairShareNeverShedsALightTenant(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 4)
	e.fastInterval("noisy")
	held := append(e.hold("light", 2), e.hold("noisy", minShare-1)...) // nothing finishes: saturated
	e.clock.Advance(100 * time.Millisecond)
	if _, _, sat, level := e.f.state(); !sat || level == 0 {
		t.Fatalf("saturated %v, level %v; want true and a level", sat, level)
	}
	// Past the soft bound and the limit alike, holding more than its
	// in-flight share, 90 a second in bursts of 30 every third interval:
	// light is admitted.
	for range 3 {
		held = append(held, e.hold("light", 30)...)
		e.clock.Advance(300 * time.Millisecond)
	}
	for _, done := range held {
		done()
	}
}

// Past the soft bound of admissions in flight, the tenant holding its
// in-flight share (and asking for more than a light tenant) is refused
// before any slow interval ends.
func TestFairShareSoftBound(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 16)
	e.admit("a", lightLimit) // not light
	e.hold("a", 15)
	e.hold("b", 1)
	if _, why := e.f.enter("a"); why != shedShare {
		t.Fatalf("a over its in-flight share at the soft bound: %d", why)
	}
	e.hold("b", 3)
}

// A refused tenant does not become active by asking, and a tenant idle
// for activeWindow is no longer active: the one left is alone again.
func TestFairShareActiveTenants(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.fastInterval("a")
	e.interval(20*time.Millisecond, map[string]int{"a": 100, "b": 1})
	if k := e.refused("a", 5); k != 5 {
		t.Fatalf("a over its share beside b: %d of 5 refused", k)
	}
	e.clock.Advance(activeWindow)
	e.slowInterval("a")
	if _, active, sat, _ := e.f.state(); active != 1 || !sat {
		t.Fatalf("after b's active window: %d active, saturated %v; want 1, true", active, sat)
	}
	e.admit("a", 200) // alone again: bounded by max only
}

// On a machine whose fastest admission is slower than the target assumes,
// the threshold is floorFactor (2) x that floor: admissions 1.75x the
// floor are no standing queue, 5x are; the floor forgets after two epochs.
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
		_, _, sat, _ := e.f.state()
		return sat
	}
	if run(4 * time.Millisecond) {
		t.Fatal("4ms admissions, under the 5ms target, are saturated")
	}
	if run(7 * time.Millisecond) {
		t.Fatal("7ms admissions with a floor of 4ms (threshold 8ms) are saturated")
	}
	if !run(20 * time.Millisecond) {
		t.Fatal("20ms admissions with a floor of 4ms are not saturated")
	}
	for range 2 {
		e.clock.Advance(floorEpoch)
		run(20 * time.Millisecond)
	}
	if run(20 * time.Millisecond) {
		t.Fatal("20ms admissions are still saturated after 20s of nothing faster")
	}
}

// A tail is a queue too: an interval whose fastest admission is quick
// but more than slowFraction of whose admissions are slower than the
// threshold is saturated (the other tenants feel the tail, not the
// minimum); at slowFraction or less it is not.
func TestFairShareSlowTailIsSaturation(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	run := func(fast, slow int) bool {
		for range fast {
			done := e.hold("a", 1)[0]
			e.clock.Advance(time.Millisecond)
			done()
		}
		var dones []func()
		for range slow {
			dones = append(dones, e.hold("a", 1)[0])
		}
		e.clock.Advance(20 * time.Millisecond)
		for _, done := range dones {
			done()
		}
		e.clock.Advance(100 * time.Millisecond)
		_, _, sat, _ := e.f.state()
		return sat
	}
	if run(18, 2) {
		t.Fatal("2 slow admissions of 20 (10%) are saturated")
	}
	if !run(17, 3) {
		t.Fatal("3 slow admissions of 20 (15%), the fastest 1ms, are not saturated")
	}
	if run(20, 0) {
		t.Fatal("20 fast admissions are saturated")
	}
}

// A tenant active a moment ago but quiet since waits for nothing: the
// heavy tenant of a saturated process is not shed while nobody else has
// asked in this interval or the last (seen as a 429 for a tenant filling
// its calendar one request at a time, a second after another tenant's
// only request), and is shed again as soon as someone else asks.
func TestFairShareShedsOnlyWhenAnotherTenantAsks(t *testing.T) {
	t.Parallel()
	e := newFairEnv(t, 512, 0)
	e.fastInterval("heavy") // a floor of 1 ms
	e.interval(20*time.Millisecond, map[string]int{"heavy": 101, "other": 1})
	// The next interval, without other: heavy's sliding count has fallen
	// under its level after 60 ms; ten slow admissions keep it saturated.
	e.f.state() // the interval begins now
	e.clock.Advance(60 * time.Millisecond)
	dones := e.hold("heavy", 10)
	e.clock.Advance(20 * time.Millisecond)
	for _, done := range dones {
		done()
	}
	e.clock.Advance(20 * time.Millisecond)
	_, active, sat, level := e.f.state()
	if !sat || active != 2 || level != 20 {
		t.Fatalf("after saturated intervals: saturated %v, %d active, level %v; want true, 2, 20", sat, active, level)
	}
	if k := e.refused("heavy", 50); k != 0 {
		t.Fatalf("heavy, the only tenant asking: %d of 50 refused, want 0", k)
	}
	if k := e.refused("other", 1); k != 0 {
		t.Fatalf("other asking again: refused")
	}
	if k := e.refused("heavy", 50); k != 50 {
		t.Fatalf("heavy over its share while other asks: %d of 50 refused, want 50", k)
	}
}
