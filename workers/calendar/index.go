package calendar

import (
	"time"

	"tms/workers/calendar/feasible"
)

// The index keeps, per minute of [base, base+span), what a placement
// reads without walking every agent: the free slots among the agents that
// offer the minute, and (built with the plan) the latest Last of a
// movable ticket there and whose it is. The
// plan is the feasibility model of the flexible zone, the minutes at or
// after the frozen horizon F: an offered slot gives it capacity unless a
// fixed entry (a hold, a claim, a ticket of unknown window) occupies it,
// and every movable ticket there is demand at its Last. Both follow every
// entry change (reindex) and every agent change (offering); a rebase
// rebuilds them.

// capacity says whether an offered slot holding e counts as capacity in
// the plan: free, or held by a ticket that may move.
func capacity(e entry, m int64) bool { return !e.busy() || e.movable(m) }

// deadline is a movable ticket's Last as a plan minute: a Last beyond the
// indexed range counts as its last minute, which only ever refuses more.
func (c *Calendar) deadline(last int64) int64 { return min(last, c.base+span-1) }

// reindex follows the change of a's minute m from old to e.
func (c *Calendar) reindex(a *agent, m int64, old, e entry) {
	if c.dirty || !a.offers(m) || !c.inRange(m) {
		return
	}
	i := m - c.base
	if old.busy() != e.busy() {
		if e.busy() {
			c.free[i]--
		} else {
			c.free[i]++
		}
	}
	om, nm := old.movable(m), e.movable(m)
	if c.latest != nil {
		if om && c.top[i] == a {
			c.stale[i] = true // unless the new ticket here is still the latest
		}
		// While stale, latest is still at least every remaining Last, so
		// a ticket that reaches it is the latest again.
		if nm && (e.last > c.latest[i] || e.last == c.latest[i] && (c.stale[i] || a.id < c.top[i].id)) {
			c.latest[i], c.top[i], c.stale[i] = e.last, a, false
		}
	}
	if c.plan == nil || m < c.f {
		return
	}
	if oc, nc := capacity(old, m), capacity(e, m); oc != nc {
		d := 1
		if oc {
			d = -1
		}
		c.plan.SetCapacity(m, c.plan.Capacity(m)+d)
	}
	if om {
		c.plan.Release(c.deadline(old.last))
	}
	if nm {
		c.plan.Force(c.deadline(e.last))
	}
}

// account adds (d = 1) or removes (d = -1) what the entry e of a's
// minute m gives the index and the plan, for an agent that starts or
// stops offering the minute.
func (c *Calendar) account(a *agent, m int64, e entry, d int) {
	i := m - c.base
	if !e.busy() {
		c.free[i] += int32(d)
	}
	mv := e.movable(m)
	if c.latest != nil && mv {
		switch {
		case d < 0 && c.top[i] == a:
			c.stale[i] = true
		case d > 0 && (e.last > c.latest[i] || e.last == c.latest[i] && (c.stale[i] || a.id < c.top[i].id)):
			c.latest[i], c.top[i], c.stale[i] = e.last, a, false
		}
	}
	if c.plan == nil || m < c.f {
		return
	}
	if capacity(e, m) {
		c.plan.SetCapacity(m, c.plan.Capacity(m)+d)
	}
	switch {
	case mv && d < 0:
		c.plan.Release(c.deadline(e.last))
	case mv && d > 0:
		c.plan.Force(c.deadline(e.last))
	}
}

// offering follows an agent whose availability or start changed from
// (was, from): every indexed minute it starts or stops offering.
func (c *Calendar) offering(a *agent, was bool, from int64) {
	if c.dirty {
		return
	}
	for m := c.base; m < c.base+span; m++ {
		before, now := was && from <= m, a.offers(m)
		switch {
		case before && !now:
			c.account(a, m, a.slots[m], -1)
		case now && !before:
			c.account(a, m, a.slots[m], 1)
		}
	}
}

// rebuild recomputes the free slots from the entries and drops what
// placements with moves use, rebuilt when next needed (model).
func (c *Calendar) rebuild() {
	clear(c.free)
	end := c.base + span
	for _, a := range c.order {
		if !a.available || a.start >= end {
			continue
		}
		for i := max(a.start, c.base) - c.base; i < span; i++ {
			c.free[i]++
		}
		for m, e := range a.slots {
			if a.offers(m) && e.busy() {
				c.free[m-c.base]--
			}
		}
	}
	c.dirty, c.plan, c.latest, c.top, c.stale = false, nil, nil, nil, nil
}

// horizon is the frozen horizon F at now, as a minute index.
func (c *Calendar) horizon(now time.Time) int64 {
	return minuteIndex(ceilMinute(now.UTC())) + c.frozen
}

// sync brings the calendar to now: holds expired, the index rebuilt if
// dirty, and the plan (if built) advanced to the horizon, which it
// returns.
func (c *Calendar) sync(now time.Time) int64 {
	c.ExpireHolds(now)
	if c.dirty {
		c.rebuild()
	}
	f := c.horizon(now)
	if c.plan != nil {
		c.advance(f)
	}
	return f
}

// maxStep bounds how many minutes advance drops one by one, each costing
// a look at every agent; a longer jump rebuilds the plan instead.
const maxStep = 32

// advance moves the plan's horizon to f: the minutes that enter the
// frozen zone leave the model, their capacity and the demand of the
// tickets there. A horizon that goes back (a smaller SetFrozen, a clock
// step) or jumps far drops the plan, rebuilt when next needed.
func (c *Calendar) advance(f int64) {
	if f < c.f || f-c.f > maxStep {
		c.plan = nil
		return
	}
	for m := max(c.f, c.base); m < min(f, c.base+span); m++ {
		c.plan.SetCapacity(m, 0)
		for _, a := range c.order {
			if !a.offers(m) {
				continue
			}
			if e := a.slots[m]; e.movable(m) {
				c.plan.Release(c.deadline(e.last))
			}
		}
	}
	c.f = f
	c.plan.Drop(f)
}

// model returns the plan at horizon f (sync'ed), building it, and the
// latest Lasts, if needed: one pass over the entries.
func (c *Calendar) model(f int64) *feasible.Plan {
	if c.plan != nil && c.latest != nil {
		return c.plan
	}
	build := c.latest == nil
	if build {
		c.latest, c.top, c.stale = make([]int64, span), make([]*agent, span), make([]bool, span)
	}
	var capa, demand []int
	if c.plan == nil {
		capa, demand = make([]int, span), make([]int, span)
	}
	for _, a := range c.order { // by id: the first agent of a tie stays top
		if !a.available {
			continue
		}
		for m, e := range a.slots {
			if !a.offers(m) || !e.movable(m) {
				continue
			}
			i := m - c.base
			if build && e.last > c.latest[i] {
				c.latest[i], c.top[i] = e.last, a
			}
			if capa != nil && m >= f {
				capa[i]++
				demand[c.deadline(e.last)-c.base]++
			}
		}
	}
	if capa != nil {
		for i := max(f-c.base, 0); i < span; i++ {
			capa[i] += int(c.free[i])
		}
		c.plan, c.f = feasible.Load(c.base, f, capa, demand), f
	}
	return c.plan
}

// latestAt is the latest Last of a movable ticket at minute m (0: none)
// and the agent of that ticket (the first by id among equal Lasts, unless
// the latest left and came back), recomputed if the ticket that had it
// left.
func (c *Calendar) latestAt(m int64) (int64, *agent) {
	i := m - c.base
	if c.stale[i] {
		c.latest[i], c.top[i] = 0, nil
		for _, a := range c.order {
			if !a.offers(m) {
				continue
			}
			if e := a.slots[m]; e.movable(m) && e.last > c.latest[i] {
				c.latest[i], c.top[i] = e.last, a
			}
		}
		c.stale[i] = false
	}
	return c.latest[i], c.top[i]
}

// earliestFree is the earliest free offered slot in [f, l] (indexed
// minutes), ties by agent id, and the revision its write replaces.
func (c *Calendar) earliestFree(f, l int64) (Claim, bool) {
	for m := max(f, c.base); m <= min(l, c.base+span-1); m++ {
		if c.free[m-c.base] == 0 {
			continue
		}
		for _, a := range c.order {
			if !a.offers(m) {
				continue
			}
			if e := a.slots[m]; !e.busy() {
				return Claim{Slot: Slot{Agent: a.id, Minute: minuteTime(m)}, Rev: e.rev}, true
			}
		}
	}
	return Claim{}, false
}
