package calendar

import (
	"cmp"
	"slices"
	"time"
)

// Agent is one agent of a tenant as the calendar needs it.
type Agent struct {
	ID        string
	Available bool
	// Since is when the agent last became available; it contributes slots
	// from AgentStart(Since). Ignored while not available.
	Since time.Time
}

// Slot is one agent-minute. Minute is a whole UTC minute.
type Slot struct {
	Agent  string
	Minute time.Time
}

// Claim is a slot handed out to one reservation attempt. Until it is given
// back (Taken, Lost or Abandon) no other Claim returns the same slot.
type Claim struct {
	Slot
	rev uint64 // what the calendar knew of the key when it was claimed
}

// Entry is one key of a KV snapshot: a reserved slot and its revision.
type Entry struct {
	Slot
	Rev uint64
}

// span is how many minutes the calendar indexes, from base. It must hold
// backlog plus the longest window (480 minutes) with room to spare, so
// that rebasing is rare; keys outside it are ignored (a create on such a
// key would simply conflict, and the KV create is the truth anyway).
const (
	span    = 1024
	backlog = 60
)

// entry is what the calendar knows of one agent-minute. held: KV holds a
// key (reserved, held or confirmed); claimed: an attempt in this process
// is in flight; rev: the newest KV revision seen for the key, so that an
// older event delivered late never overwrites a newer fact. An entry with
// neither flag but a revision is a tombstone, kept for that comparison.
type entry struct {
	held, claimed bool
	rev           uint64
}

func (e entry) busy() bool { return e.held || e.claimed }

type agent struct {
	id        string
	available bool
	start     int64 // minute index of the first slot
	slots     map[int64]entry
}

// Calendar indexes one tenant's agents and agent-minutes. It is not safe
// for concurrent use: the owner serialises calls.
type Calendar struct {
	agents map[string]*agent
	order  []*agent // by id: ties between agents go to the smallest id
	nAvail int32
	base   int64   // minute index of counts[0]
	counts []int32 // per minute: busy slots of available agents
}

// New returns an empty calendar indexing minutes around now.
func New(now time.Time) *Calendar {
	return &Calendar{
		agents: make(map[string]*agent),
		base:   minuteIndex(now) - backlog,
		counts: make([]int32, span),
	}
}

func (c *Calendar) inRange(m int64) bool { return m >= c.base && m < c.base+span }

// ensure returns the agent, adding an unavailable placeholder for an id
// first seen through a slot key.
func (c *Calendar) ensure(id string) *agent {
	if a, ok := c.agents[id]; ok {
		return a
	}
	a := &agent{id: id, slots: make(map[int64]entry)}
	c.agents[id] = a
	i, _ := slices.BinarySearchFunc(c.order, id, func(x *agent, id string) int { return cmp.Compare(x.id, id) })
	c.order = slices.Insert(c.order, i, a)
	return a
}

// set stores e for a's minute m and keeps counts in step.
func (c *Calendar) set(a *agent, m int64, e entry) {
	old := a.slots[m]
	if !e.busy() && e.rev == 0 {
		delete(a.slots, m)
	} else {
		a.slots[m] = e
	}
	if a.available && old.busy() != e.busy() {
		if e.busy() {
			c.counts[m-c.base]++
		} else {
			c.counts[m-c.base]--
		}
	}
}

// SetAgent adds or updates an agent. Marking it unavailable keeps what is
// known of its slots (they stay reserved in KV) but it gets no new ones.
func (c *Calendar) SetAgent(ag Agent) {
	a := c.ensure(ag.ID)
	if ag.Available {
		a.start = minuteIndex(AgentStart(ag.Since))
	}
	if a.available == ag.Available {
		return
	}
	a.available = ag.Available
	var d int32 = -1
	if ag.Available {
		d = 1
	}
	c.nAvail += d
	for m, e := range a.slots {
		if e.busy() {
			c.counts[m-c.base] += d
		}
	}
}

// LoadAgents replaces the agent set with a snapshot: agents not in it
// become unavailable.
func (c *Calendar) LoadAgents(agents []Agent) {
	in := make(map[string]bool, len(agents))
	for _, ag := range agents {
		in[ag.ID] = true
	}
	for _, a := range c.order {
		if !in[a.id] && a.available {
			c.SetAgent(Agent{ID: a.id})
		}
	}
	for _, ag := range agents {
		c.SetAgent(ag)
	}
}

// Claim finds the earliest free agent-minute in [first, last] (whole
// minutes, inclusive) among available agents, ties by agent id, and marks
// it claimed. ok is false when there is none.
func (c *Calendar) Claim(first, last time.Time) (Claim, bool) {
	f, l := minuteIndex(first), minuteIndex(last)
	if c.nAvail == 0 || l < f {
		return Claim{}, false
	}
	if f < c.base || l >= c.base+span {
		c.rebase(f - backlog)
	}
	minStart := int64(1<<63 - 1)
	for _, a := range c.order {
		if a.available {
			minStart = min(minStart, a.start)
		}
	}
	for m := max(f, minStart); m <= l; m++ {
		if c.counts[m-c.base] >= c.nAvail {
			continue // every available agent is busy: skip the minute
		}
		for _, a := range c.order {
			if !a.available || a.start > m {
				continue
			}
			e := a.slots[m]
			if e.busy() {
				continue
			}
			e.claimed = true
			c.set(a, m, e)
			return Claim{Slot: Slot{Agent: a.id, Minute: minuteTime(m)}, rev: e.rev}, true
		}
	}
	return Claim{}, false
}

// settle ends a claim: fn gets the entry with claimed cleared.
func (c *Calendar) settle(s Slot, fn func(e *entry)) {
	a, ok := c.agents[s.Agent]
	m := minuteIndex(s.Minute)
	if !ok || !c.inRange(m) {
		return // rebased away meanwhile: nothing to keep
	}
	e := a.slots[m]
	e.claimed = false
	fn(&e)
	c.set(a, m, e)
}

// Taken ends a claim whose KV create succeeded at revision rev: the slot
// is reserved at once, without waiting for the watch.
func (c *Calendar) Taken(cl Claim, rev uint64) {
	c.settle(cl.Slot, func(e *entry) {
		if rev > e.rev {
			e.held, e.rev = true, rev
		}
	})
}

// Lost ends a claim whose create found the key already there. Unless the
// watch delivered something newer for the key since the claim (then it
// knows better), the slot is marked reserved until an event says
// otherwise.
func (c *Calendar) Lost(cl Claim) {
	c.settle(cl.Slot, func(e *entry) {
		if e.rev <= cl.rev {
			e.held = true
		}
	})
}

// Abandon ends a claim that wrote nothing and learned nothing.
func (c *Calendar) Abandon(cl Claim) { c.settle(cl.Slot, func(*entry) {}) }

// Put applies a KV put (a reservation or hold written by anyone) at
// revision rev.
func (c *Calendar) Put(s Slot, rev uint64) { c.apply(s, rev, true) }

// Delete applies a KV delete or purge (a release, an expired TTL) at
// revision rev.
func (c *Calendar) Delete(s Slot, rev uint64) { c.apply(s, rev, false) }

// Released records this process's own release of a key that was at
// revision rev: free at once; the watch's purge event (a newer revision)
// agrees later, an older put delivered late is ignored.
func (c *Calendar) Released(s Slot, rev uint64) {
	a, ok := c.agents[s.Agent]
	m := minuteIndex(s.Minute)
	if !ok || !c.inRange(m) {
		return
	}
	e := a.slots[m]
	if rev >= e.rev {
		e.held, e.rev = false, rev
		c.set(a, m, e)
	}
}

func (c *Calendar) apply(s Slot, rev uint64, held bool) {
	m := minuteIndex(s.Minute)
	if !c.inRange(m) {
		return
	}
	a := c.ensure(s.Agent)
	e := a.slots[m]
	if rev <= e.rev {
		return
	}
	e.held, e.rev = held, rev
	c.set(a, m, e)
}

// LoadSlots replaces what the calendar knows of KV with a snapshot (a
// rebuilt watch): every key not in it is free. Claims in flight stay.
func (c *Calendar) LoadSlots(entries []Entry) {
	for _, a := range c.order {
		for m, e := range a.slots {
			e.held, e.rev = false, 0
			c.set(a, m, e)
		}
	}
	for _, en := range entries {
		c.Put(en.Slot, en.Rev)
	}
}

// rebase moves the indexed range to start at base, dropping what falls
// outside it, and recounts.
func (c *Calendar) rebase(base int64) {
	c.base = base
	clear(c.counts)
	for _, a := range c.order {
		for m, e := range a.slots {
			switch {
			case !c.inRange(m):
				delete(a.slots, m)
			case a.available && e.busy():
				c.counts[m-c.base]++
			}
		}
	}
}

// Reserved reports whether KV is known to hold the slot's key.
func (c *Calendar) Reserved(s Slot) bool {
	a, ok := c.agents[s.Agent]
	return ok && a.slots[minuteIndex(s.Minute)].held
}

// Free counts the free agent-minutes in [first, last] that Claim could
// hand out.
func (c *Calendar) Free(first, last time.Time) int {
	n := 0
	for m := minuteIndex(first); m <= minuteIndex(last); m++ {
		for _, a := range c.order {
			if a.available && a.start <= m && !a.slots[m].busy() {
				n++
			}
		}
	}
	return n
}
