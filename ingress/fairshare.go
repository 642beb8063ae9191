package ingress

import (
	"slices"
	"sync"
	"time"
)

// fairShare is the admission limiter of a process. It bounds the
// admissions in flight (max: 503 past it) and, while the process is
// saturated and two or more tenants are asking, sheds the tenants that
// use more than their fair share of it (429), so that a tenant sending
// far more than the process can serve is refused before the others
// wait. A tenant alone is bounded by max only: there is nobody to be
// fair to, and any lower bound would refuse work the process can do.
//
// Saturated means a standing queue, in the manner of CoDel: the fastest
// admission that finished in an interval took longer than the threshold,
// max(target, floorFactor x the floor), the floor being the fastest
// admission of the last one or two floor epochs (or nothing finished
// while work was in flight), or more than slowFraction of the
// admissions that finished in it took longer than the threshold. A burst
// makes some admissions slow; only a queue that does not drain makes
// every admission of an interval slow; and a tail of slow admissions
// beside fast ones (measured: at half the capacity of a 2-core machine
// the fastest admission stays under 1 ms while one in ten takes tens of
// ms) is what the other tenants feel, so it counts as well.
//
// Shares are of admissions a second, not of admissions in flight: on a
// small machine one or two admissions in flight already keep the CPU
// busy (each is a NATS request-reply and an fsynced JetStream write,
// and the allocators' database writes follow), so a bound on in flight
// can neither tell the heavy tenant from the light ones nor hold the
// heavy one below the knee. Measured that way (README, Limits):
//
//   - While saturated, the process admits at most limit admissions per
//     interval, set AIMD-fashion: a saturated interval sets it to
//     decrease x what was admitted; every other interval raises it by
//     increase, and once nobody was refused and demand is well under it
//     the control ends (limit 0).
//   - The limit is shared max-min fair among the active tenants (those
//     admitted within activeWindow, or in flight): a tenant asking for
//     less than an equal split keeps what it asks, the rest is split
//     among the others; the level of that split, at least minShare, is
//     what each may admit per interval (a sliding count of its
//     admissions). Past it: 429.
//   - Independently, while soft or more admissions are in flight, a
//     tenant holding its in-flight share (total / active, at least
//     minInFlightShare) or more is refused: that catches a flood before
//     the first slow interval ends.
//   - A tenant admitted fewer than lightLimit times over the last second
//     is never refused by either: on a machine slowed by something else
//     (the refusals themselves cost CPU), the requests of a light tenant
//     pile up in flight too, and shedding them would punish the victim.
//
// The clock is injected; every decision is taken under one mutex, which
// costs far less than the work it admits.
type fairShare struct {
	max      int           // admissions in flight; 0: no bound
	soft     int           // in flight at which in-flight shares apply; 0: never
	target   time.Duration // standing-queue latency; 0: no latency control
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	total   int // in flight
	tenants map[string]*tenantLoad

	// The current interval: when it began, the fastest admission that
	// finished in it (0: none yet), how many were admitted.
	windowStart  time.Time
	windowMin    time.Duration
	windowAdmits int
	// Admissions that finished in the interval, and how many of them
	// took longer than the threshold.
	windowDone, windowSlow int
	saturated              bool // the verdict on the last interval
	// limit is the admissions per interval while controlling (0: not
	// controlling); level the max-min share of it per tenant.
	limit, level float64
	refused      int // in the current interval
	// Tenants that asked in the last interval (or had work in flight at
	// its end), and tenants that have asked in the current one: the fair
	// share sheds a tenant only when another one wants something too.
	askingPrev, askingCur int
	// The floor: the fastest admission of this epoch and of the one
	// before (0: none), so that it follows a machine that got slower.
	epochStart        time.Time
	epochMin, prevMin time.Duration
}

type tenantLoad struct {
	inFlight int
	last     time.Time // of its last admission
	// Admissions and refusals in the current and the previous interval.
	cur, prev       int
	curAsk, prevAsk int  // admissions + refusals: what it asked for
	askedPrev       bool // counted in askingPrev
	// Admissions of the last lightWindow intervals before the current
	// one (a ring), and their sum.
	hist    [lightWindow]int
	histAt  int
	histSum int
}

// light reports whether t was admitted fewer than lightLimit times over
// the last second: a tenant the fair share never sheds. Measured over a
// second, not an interval, so that a light tenant whose requests bunch
// up (a slow network, a client that was itself starved of CPU and sends
// what it owes at once) is still light.
func (t *tenantLoad) light() bool { return t.histSum+t.cur < lightLimit }

// shift ends an interval of t.
func (t *tenantLoad) shift(stale bool) {
	t.histSum += t.cur - t.hist[t.histAt]
	t.hist[t.histAt] = t.cur
	t.histAt = (t.histAt + 1) % lightWindow
	if stale {
		t.prev, t.prevAsk = 0, 0
		t.hist, t.histSum = [lightWindow]int{}, 0
	} else {
		t.prev, t.prevAsk = t.cur, t.curAsk
	}
	t.cur, t.curAsk = 0, 0
}

// rate is the sliding count of t's admissions over the last interval,
// frac of the current one having passed.
func (t *tenantLoad) rate(frac float64) float64 {
	return float64(t.cur) + float64(t.prev)*(1-frac)
}

// Tuning of fairShare, chosen by measurement (README, Limits).
const (
	// activeWindow: a tenant admitted this recently counts as active,
	// though it may have nothing in flight at this instant.
	activeWindow = time.Second
	// floorEpoch is how long the floor remembers a fast admission.
	floorEpoch = 10 * time.Second
	// floorFactor: on a machine slower than the target assumes (a loaded
	// CI box, the race detector), the fastest admission is several
	// milliseconds; a queue shows as a multiple of it.
	floorFactor = 2
	// slowFraction: more than this share of an interval's admissions
	// slower than the threshold is a queue too, one the fastest
	// admission does not show (a tail: what the other tenants feel).
	slowFraction = 0.1
	// meanMargin: the max-min level is never under this many times the
	// mean ask of the tenants asking (maxMin).
	meanMargin = 1.5
	// AIMD of the limit, per interval.
	limitDecrease = 0.7
	limitIncrease = 1.1
	// minShare is the least share per interval of an active tenant (10
	// per 100 ms), and minLimit the least limit.
	minShare = 10
	minLimit = 2 * minShare
	// A tenant admitted fewer than lightLimit times over the last
	// lightWindow intervals (100 over a second) is never shed.
	lightWindow = 10
	lightLimit  = 100
	// minInFlightShare is the admissions in flight every tenant may have
	// past the soft bound.
	minInFlightShare = 4
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
	f.ask(tl)
	if f.overShare(tl, now) {
		f.refused++
		if tl.inFlight == 0 && tl.histSum+tl.cur == 0 && now.Sub(tl.last) >= activeWindow {
			// Never admitted lately: it does not become active by asking.
			delete(f.tenants, tenant)
		}
		return nil, shedShare
	}
	f.total++
	f.windowAdmits++
	tl.inFlight++
	tl.cur++
	tl.last = now
	var once sync.Once
	return func() { once.Do(func() { f.leave(tl, now) }) }, admitted
}

// ask counts one request of tl in the current interval; f.mu is held.
func (f *fairShare) ask(tl *tenantLoad) {
	if tl.curAsk == 0 {
		f.askingCur++
	}
	tl.curAsk++
}

// othersAsking reports whether a tenant other than tl asked for an
// admission in this interval or the last (or had one in flight when the
// last ended); f.mu is held.
func (f *fairShare) othersAsking(tl *tenantLoad) bool {
	prev, cur := f.askingPrev, f.askingCur
	if tl.askedPrev {
		prev--
	}
	if tl.curAsk > 0 {
		cur--
	}
	return prev > 0 || cur > 0
}

// overShare reports whether tl is to be refused as over its share; f.mu
// is held.
func (f *fairShare) overShare(tl *tenantLoad, now time.Time) bool {
	active := len(f.tenants)
	if active < 2 || tl.light() || !f.othersAsking(tl) {
		// Alone, asking for little, or the only one asking lately (a
		// tenant active a second ago but quiet since waits for nothing):
		// whatever slows the process, shedding this tenant helps nobody.
		return false
	}
	// In flight, as for rates: more than meanMargin x an equal share of
	// what is in flight (tenants that hold alike are not a flood).
	if f.soft > 0 && f.total >= f.soft && tl.inFlight >= max(minInFlightShare, int(meanMargin*float64(f.total)/float64(active))) {
		return true
	}
	frac := min(1, float64(now.Sub(f.windowStart))/float64(f.interval))
	return f.limit > 0 && tl.rate(frac) >= f.level
}

// over reports whether an admission of tenant would now be refused as
// over its share, admitting nothing: a cheap check for callers that
// would hold something scarce (a NATS API handler) before they reach
// enter. A tenant not active is not over.
func (f *fairShare) over(tenant string) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(now)
	tl := f.tenants[tenant]
	if tl == nil || !f.overShare(tl, now) {
		return false
	}
	f.ask(tl) // what it asked for, as enter would count it
	f.refused++
	return true
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
	f.windowDone++
	if d > f.threshold() {
		f.windowSlow++
	}
	if f.epochMin == 0 || d < f.epochMin {
		f.epochMin = d
	}
}

// roll ends the current interval (and floor epoch) when it is over: the
// verdict, the limit and the shares for the next; f.mu is held.
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
		f.saturated = f.windowMin > f.threshold() || f.windowSlow > int(slowFraction*float64(f.windowDone))
	}
	// An interval that ended long ago (nothing happened since) says
	// nothing about the load now.
	stale := elapsed >= 2*f.interval
	switch {
	case stale:
		f.limit = 0
	case f.saturated:
		base := float64(f.windowAdmits)
		if f.limit > 0 {
			base = min(base, f.limit)
		}
		f.limit = max(minLimit, limitDecrease*base)
	case f.limit > 0:
		if f.refused == 0 && float64(f.windowAdmits) < f.limit/2 {
			f.limit = 0
		} else {
			f.limit = f.limit*limitIncrease + 1
		}
	}
	f.askingPrev, f.askingCur = 0, 0
	for id, tl := range f.tenants {
		tl.shift(stale)
		if tl.inFlight == 0 && now.Sub(tl.last) >= activeWindow {
			delete(f.tenants, id)
			continue
		}
		tl.askedPrev = tl.prevAsk > 0 || tl.inFlight > 0
		if tl.askedPrev {
			f.askingPrev++
		}
	}
	f.level = f.maxMin()
	f.windowStart, f.windowMin, f.windowAdmits, f.refused = now, 0, 0, 0
	f.windowDone, f.windowSlow = 0, 0
}

// maxMin is the level of the max-min fair split of f.limit among the
// active tenants by what they asked for in the last interval, at least
// minShare; f.mu is held.
func (f *fairShare) maxMin() float64 {
	if f.limit <= 0 {
		return 0
	}
	asks := make([]int, 0, len(f.tenants))
	sum, asking := 0, 0
	for _, tl := range f.tenants {
		asks = append(asks, tl.prevAsk)
		if tl.prevAsk > 0 {
			sum, asking = sum+tl.prevAsk, asking+1
		}
	}
	// Never below meanMargin x the mean ask: the share protects tenants
	// from one that asks for far more than the others, and tenants that
	// all ask alike use no more than their share whatever the limit (measured: eight equal
	// tenants on a 2-core machine, whose fsync tail made a tenth of the
	// admissions slow at well under capacity, were refused a third of
	// their requests by a level under what each asked).
	mean := 0.0
	if asking > 0 {
		mean = float64(sum) / float64(asking)
	}
	slices.Sort(asks)
	left, n := f.limit, len(asks)
	for i, a := range asks {
		level := left / float64(n-i)
		if float64(a) > level {
			return max(minShare, level, meanMargin*mean)
		}
		left -= float64(a)
	}
	if n == 0 {
		return max(minShare, f.limit)
	}
	// Everyone fits: the largest may grow into what is left.
	return max(minShare, float64(asks[n-1])+left)
}

// sharePerSecond is the admissions a second a tenant is held to while
// the fair share sheds it, for the RateLimit-Policy of its 429: the
// share per interval, scaled to a second, never under what a tenant the
// fair share never sheds may have (lightLimit over lightWindow).
func (f *fairShare) sharePerSecond() int {
	f.mu.Lock()
	level, interval := f.level, f.interval
	f.mu.Unlock()
	if interval <= 0 {
		return lightLimit
	}
	perInterval := max(level, float64(lightLimit)/lightWindow)
	return int(perInterval * float64(time.Second) / float64(interval))
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

// state reports the admissions in flight, the active tenants, whether
// the last interval was saturated and the per-tenant share per interval
// (0: not controlling), for tests.
func (f *fairShare) state() (total, active int, saturated bool, level float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roll(f.now())
	return f.total, len(f.tenants), f.saturated, f.level
}
