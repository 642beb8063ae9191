package calendar

import (
	"cmp"
	"slices"
	"time"
)

// Placement is a new ticket's slot and the moves that free it, all
// claimed (no other Place or Claim returns them until each claim is ended
// with Taken, Lost or Abandon).
//
// Claims[0] is the new ticket's slot (or, from Rescue, the stranded
// ticket's slot, which is vacated). For i >= 1 the ticket that held
// Claims[i-1] moves to Claims[i]; the last claim's slot was free. Each
// Claim.Rev is the revision of that key the write must replace (0: never
// written). Lasts[i] is the Last of the ticket that moves into Claims[i]
// (i >= 1), for the Mark its Taken records; Lasts[0] is zero.
type Placement struct {
	Claims []Claim
	Lasts  []time.Time
}

// Moves is how many accepted tickets the placement moves.
func (p Placement) Moves() int { return max(len(p.Claims)-1, 0) }

// Place finds a slot for a new ticket whose window is [first, last] and
// claims it: the earliest free slot in the window among available agents,
// ties by agent id, frozen zone included (Claim's choice, no move);
// failing that, the placement with the fewest moves of accepted tickets,
// each inside its own window and none from or into a minute before the
// frozen horizon. ok is false when no schedule of the accepted tickets
// leaves room for it; nothing is claimed then.
//
// A moved ticket may go to any minute from the frozen horizon to its
// Last: every ticket's window is taken to open by then, which holds for
// tickets placed when they are created (Window of the current instant).
func (c *Calendar) Place(now, first, last time.Time) (Placement, bool) {
	p, ok := c.find(now, first, last)
	if ok {
		for _, cl := range p.Claims {
			c.claim(cl.Slot)
		}
	}
	return p, ok
}

// Capacity is Place without side effects: n is how many more tickets
// with window [first, last] could be admitted now (the free slots of the
// window before the frozen horizon, plus the plan's room for the deadline
// last), and p is where the first of them would go, nothing claimed
// (empty when n is 0). n is exact for a window that opens by the frozen
// horizon (a ticket created now); for one that opens later it may count
// minutes before its opening.
func (c *Calendar) Capacity(now, first, last time.Time) (n int, p Placement) {
	f, l, ok := c.window(first, last)
	if !ok {
		return 0, Placement{}
	}
	hz := c.sync(now)
	for m := max(f, c.base); m <= min(l, hz-1); m++ {
		n += int(c.free[m-c.base])
	}
	if l >= hz {
		n += c.model(hz).Room(l)
	}
	if n == 0 {
		return 0, Placement{}
	}
	p, _ = c.find(now, first, last)
	return n, p
}

// find is Place without the claims.
func (c *Calendar) find(now, first, last time.Time) (Placement, bool) {
	f, l, ok := c.window(first, last)
	if !ok {
		return Placement{}, false
	}
	hz := c.sync(now)
	if cl, ok := c.earliestFree(f, l); ok {
		return Placement{Claims: []Claim{cl}, Lasts: make([]time.Time, 1)}, true
	}
	if l < hz || c.model(hz).Room(l) < 1 {
		return Placement{}, false
	}
	p, ok := c.search(hz, max(f, hz), l)
	if !ok {
		c.mismatches++ // the plan and the search disagree: refuse, never place wrongly
		return Placement{}, false
	}
	return p, true
}

// Stranded is a confirmed movable ticket on a slot no available agent
// offers (its agent is not available), still to be served.
type Stranded struct {
	Slot
	Rev  uint64
	Last time.Time
}

// Stranded lists the confirmed movable tickets on agents not available
// (or on minutes before an available agent's start), at minutes from
// ceilMinute(now) on: earliest Last first, then by minute and agent.
func (c *Calendar) Stranded(now time.Time) []Stranded {
	from := minuteIndex(ceilMinute(now.UTC()))
	var out []Stranded
	add := func(a *agent, m int64, e entry) {
		if m >= from && e.movable(m) {
			out = append(out, Stranded{Slot: Slot{Agent: a.id, Minute: minuteTime(m)}, Rev: e.rev, Last: minuteTime(e.last)})
		}
	}
	for _, a := range c.order {
		if !a.available {
			for m, e := range a.slots {
				add(a, m, e)
			}
			continue
		}
		for m := max(from, c.base); m < min(a.start, c.base+span); m++ {
			if e, ok := a.slots[m]; ok {
				add(a, m, e)
			}
		}
	}
	slices.SortFunc(out, func(x, y Stranded) int {
		return cmp.Or(x.Last.Compare(y.Last), x.Minute.Compare(y.Minute), cmp.Compare(x.Agent, y.Agent))
	})
	return out
}

// Rescue places the stranded ticket at from onto available agents inside
// [F, its Last] (F the frozen horizon) with the fewest moves, and claims
// it all: Claims[0] is from itself (the caller writes a vacated record
// there), Claims[1] where the ticket goes, and so on as in Placement. ok
// is false when no schedule can save it (it is at risk) or from is not a
// stranded ticket; nothing is claimed then.
func (c *Calendar) Rescue(now time.Time, from Slot) (Placement, bool) {
	hz := c.sync(now)
	a, ok := c.agents[from.Agent]
	m := minuteIndex(from.Minute)
	if !ok || !c.inRange(m) || m < minuteIndex(ceilMinute(now.UTC())) {
		return Placement{}, false // served already, or never known
	}
	e := a.slots[m]
	if a.offers(m) || !e.movable(m) || e.last < hz || c.model(hz).Room(c.deadline(e.last)) < 1 {
		return Placement{}, false
	}
	p, ok := c.search(hz, hz, e.last)
	if !ok {
		c.mismatches++
		return Placement{}, false
	}
	p.Claims = slices.Insert(p.Claims, 0, Claim{Slot: from, Rev: e.rev})
	p.Lasts = slices.Insert(p.Lasts, 0, time.Time{})
	p.Lasts[1] = minuteTime(e.last)
	for _, cl := range p.Claims {
		c.claim(cl.Slot)
	}
	return p, true
}

// search finds the fewest moves that free a slot for a ticket allowed in
// [lo, hi] (lo >= the horizon hz), by layers: layer 0 is [lo, hi]; the
// minutes a ticket of layer k may move to are [hz, its Last], so layer
// k+1 is what [hz, R] adds, R the latest Last among layer k's movable
// tickets. The first layer with a free offered slot ends the search, at
// its earliest one; a layer that adds nothing means no path. Every move
// goes to the previous layer's ticket with the latest Last, so the path
// is: the new ticket into the slot of layer 0's chosen ticket, that one
// into layer 1's, ..., the last into the free slot. Minutes between
// layers are disjoint, so no slot is used twice. With windows that all
// reach back to hz (every accepted ticket is created by now) the layers
// are exactly the breadth-first levels of the augmenting-path search,
// hence the fewest moves.
//
// It returns the placement with Claims[0] the new ticket's slot.
func (c *Calendar) search(hz, lo, hi int64) (Placement, bool) {
	end := c.base + span - 1
	hz = max(hz, c.base) // minutes before base are not indexed
	lo, hi = max(lo, hz), min(hi, end)
	if lo > hi {
		return Placement{}, false
	}
	var chain []int64 // per layer, the minute of its chosen ticket
	// The layer's new minutes: [aLo, aHi] and [bLo, bHi].
	aLo, aHi, bLo, bHi := lo, hi, int64(1), int64(0)
	rlo, rhi := lo, hi // reached so far
	for {
		dest := int64(-1)
		best, bestAt := int64(0), int64(-1)
		for _, r := range [2][2]int64{{aLo, aHi}, {bLo, bHi}} {
			for m := r[0]; m <= r[1] && dest < 0; m++ {
				if c.free[m-c.base] > 0 {
					dest = m
					break
				}
				if l, _ := c.latestAt(m); l > best {
					best, bestAt = l, m
				}
			}
		}
		if dest >= 0 {
			return c.path(chain, dest), true
		}
		r := min(best, end)
		if bestAt < 0 || (r <= rhi && rlo == hz) {
			return Placement{}, false
		}
		chain = append(chain, bestAt)
		aLo, aHi, bLo, bHi = hz, rlo-1, rhi+1, r
		rlo, rhi = hz, max(rhi, r)
	}
}

// path resolves a search: at each chosen minute the movable ticket with
// the latest Last, then the first free slot of dest.
func (c *Calendar) path(chain []int64, dest int64) Placement {
	p := Placement{Claims: make([]Claim, 0, len(chain)+1), Lasts: make([]time.Time, 1, len(chain)+1)}
	for _, m := range chain {
		last, a := c.latestAt(m)
		p.Claims = append(p.Claims, Claim{Slot: Slot{Agent: a.id, Minute: minuteTime(m)}, Rev: a.slots[m].rev})
		p.Lasts = append(p.Lasts, minuteTime(last))
	}
	cl, _ := c.earliestFree(dest, dest)
	p.Claims = append(p.Claims, cl)
	return p
}
