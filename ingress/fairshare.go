package ingress

import (
	"sync"
	"time"
)

// fairShare is the admission limiter of a process: it bounds the
// admissions in flight (max, 503 past it) and, while the process is
// saturated and two or more tenants are active, refuses a tenant that
// holds its fair share of them or more (429), so that a tenant sending
// far more than the process can serve is shed before the others wait.
// A tenant alone on the process is bounded by max only: there is nobody
// to be fair to, and any lower bound would refuse work the process can do.
//
// Saturated means a standing queue, in the manner of CoDel: the fastest
// admission that finished in each interval took longer than the target
// (max(target, floorFactor x the floor, the fastest admission seen in
// the last two floor epochs)). A burst makes some admissions slow; only
// a queue that does not drain makes every admission of an interval slow.
// The process also counts as saturated while soft or more admissions are
// in flight, which catches a flood before the first slow interval ends.
// A tenant's fair share is the admissions in flight divided by the
// tenants active (in flight now, or admitted within activeWindow), and
// at least minShare.
//
// The clock is injected; every decision is taken under one mutex, which
// costs far less than the work it admits (a NATS request-reply and an
// fsynced JetStream write).
type fairShare struct {
	max      int           // admissions in flight; 0: no bound
	soft     int           // in flight that counts as saturated; 0: none
	target   time.Duration // standing-queue latency; 0: no latency signal
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	total   int
	tenants map[string]*tenantLoad

	// The current interval: when it began, the fastest admission that
	// finished in it (0: none yet); saturated is the verdict on the last
	// interval.
	windowStart time.Time
	windowMin   time.Duration
	saturated   bool
	// The floor: the fastest admission of this epoch and of the one
	// before (0: none), so that it follows a machine that got slower.
	epochStart        time.Time
	epochMin, prevMin time.Duration
}

type tenantLoad struct {
	inFlight int
	last     time.Time // of its last admission
}

// Tuning of fairShare, chosen by measurement (README, Overload).
const (
	// activeWindow: a tenant that was admitted this recently counts as
	// active, though it may have nothing in flight at this instant.
	activeWindow = time.Second
	// floorEpoch is how long the floor remembers a fast admission.
	floorEpoch = 10 * time.Second
	// floorFactor: on a machine slower than the target assumes (a
	// loaded CI box, the race detector), the fastest admission is
	// several milliseconds; a queue shows as a multiple of it.
	floorFactor = 4
	// minShare is the admissions in flight every tenant may have, however
	// saturated the process: a tenant sending a few requests at a time
	// is never the one to shed, even in an interval where the heavy
	// tenant's share has fallen to nothing.
	minShare = 4
)

func newFairShare(max, soft int, target, interval time.Duration, now func() time.Time) *fairShare {
	return &fairShare{max: max, soft: soft, target: target, interval: interval, now: now,
		tenants: map[string]*tenantLoad{}}
}

// shed is why enter refused.
type shed int

const (
	admitted  shed = iota
	shedMax        // max in flight: 503
	shedShare      // over its fair share of a saturated process: 429
)

// enter admits one admission of tenant, or says why not. done, called
// once when the admission's work is over, gives the place back and
// records how long it took.
func (f *fairShare) enter(tenant string) (done func(), why shed) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(now)
	if f.max > 0 && f.total >= f.max {
		return nil, shedMax
	}
	tl := f.tenants[tenant]
	if tl == nil {
		tl = &tenantLoad{}
		f.tenants[tenant] = tl
	}
	if f.isSaturated() && len(f.tenants) >= 2 && tl.inFlight >= max(minShare, f.total/len(f.tenants)) {
		if tl.inFlight == 0 && now.Sub(tl.last) >= activeWindow {
			// Not admitted: it does not become active by asking.
			delete(f.tenants, tenant)
		}
		return nil, shedShare
	}
	f.total++
	tl.inFlight++
	tl.last = now
	var once sync.Once
	return func() { once.Do(func() { f.leave(tl, now) }) }, admitted
}

func (f *fairShare) leave(tl *tenantLoad, start time.Time) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(now)
	f.total--
	tl.inFlight--
	d := max(now.Sub(start), 1) // 0 stands for "none"
	if f.windowMin == 0 || d < f.windowMin {
		f.windowMin = d
	}
	if f.epochMin == 0 || d < f.epochMin {
		f.epochMin = d
	}
}

// isSaturated is the verdict on the last interval, or the soft bound; f.mu
// is held.
func (f *fairShare) isSaturated() bool {
	return f.saturated || (f.soft > 0 && f.total >= f.soft)
}

// roll ends the current interval (and floor epoch) when it is over, and
// drops the tenants that are no longer active; f.mu is held.
func (f *fairShare) roll(now time.Time) {
	if f.windowStart.IsZero() {
		f.windowStart, f.epochStart = now, now
		return
	}
	if now.Sub(f.epochStart) >= floorEpoch {
		if f.epochMin != 0 {
			f.prevMin = f.epochMin
		}
		f.epochMin, f.epochStart = 0, now
	}
	elapsed := now.Sub(f.windowStart)
	if elapsed < f.interval {
		return
	}
	switch {
	case f.target <= 0:
		f.saturated = false
	case f.windowMin == 0:
		// Nothing finished in the interval: saturated if work is in
		// flight (it is stuck, or queued behind what is).
		f.saturated = f.total > 0
	default:
		f.saturated = f.windowMin > f.threshold()
	}
	f.windowStart, f.windowMin = now, 0
	for id, tl := range f.tenants {
		if tl.inFlight == 0 && now.Sub(tl.last) >= activeWindow {
			delete(f.tenants, id)
		}
	}
}

// threshold is the latency above which the fastest admission of an
// interval shows a standing queue; f.mu is held.
func (f *fairShare) threshold() time.Duration {
	floor := f.prevMin
	if f.epochMin != 0 && (floor == 0 || f.epochMin < floor) {
		floor = f.epochMin
	}
	return max(f.target, floorFactor*floor)
}

// load reports the admissions in flight, the active tenants and whether
// the process counts as saturated (tests, metrics).
func (f *fairShare) load() (total, active int, saturated bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(f.now())
	return f.total, len(f.tenants), f.isSaturated()
}
