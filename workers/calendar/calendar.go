package calendar

import (
	"cmp"
	"container/heap"
	"slices"
	"time"

	"tms/workers/calendar/feasible"
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
	// Rev is the newest revision of the slot's key the calendar knew when
	// it was claimed: 0 if the key was never written (the write is a
	// create), else the revision a revision-checked update must replace
	// (a released ticket, an expired hold).
	Rev uint64
}

// State is what the newest record of a slot's key says of its minute.
type State uint8

const (
	// Free: no record, a released one, or an expired hold.
	Free State = iota
	// Busy: a confirmed ticket, or a record that does not decode (the
	// calendar does not offer what it cannot read).
	Busy
	// Held: a pending hold, busy until Mark.Until and free after it
	// without any write.
	Held
)

// Mark is what the calendar records of one key's newest record.
type Mark struct {
	State State
	Until time.Time // Held: the hold's expiry
	// Last is the last minute of a confirmed ticket's window (Window's
	// last): the ticket may be moved to any minute from the frozen
	// horizon up to it, so its window must open by then (a ticket placed
	// when it is created). Zero when unknown (an unreadable record) or
	// when the window opens later: the ticket never moves.
	Last time.Time
}

// Entry is one key of a KV snapshot: a slot, the revision of its newest
// record, and what that record says.
type Entry struct {
	Slot
	Rev uint64
	Mark
}

// span is how many minutes the calendar indexes, from base. It must hold
// backlog plus the longest window (480 minutes) with room to spare, so
// that rebasing is rare; keys outside it are ignored (a write on such a
// key would simply conflict, and the KV write decides anyway).
const (
	span    = 1024
	backlog = 60
)

// entry is what the calendar knows of one agent-minute: the state of the
// key's newest record at revision rev (the newest seen, so that an older
// event delivered late never overwrites a newer fact), a hold's expiry,
// and claimed while an attempt in this process is in flight. A free entry
// with a revision is kept: a reservation there replaces that revision.
type entry struct {
	state   State
	claimed bool
	until   time.Time // Held
	rev     uint64
	last    int64 // Busy: minute index of Mark.Last, 0 if unknown
}

func (e entry) busy() bool { return e.claimed || e.state != Free }

// movable says whether the entry at minute m is a confirmed ticket that
// may move: its window's last minute is known (and not before m), and no
// attempt has it claimed. Everything else busy is fixed.
func (e entry) movable(m int64) bool {
	return !e.claimed && e.state == Busy && e.last != 0 && e.last >= m
}

// hold is a hold's expiry in the calendar's heap: the entry frees itself
// then, if it is still that hold (same revision).
type hold struct {
	a     *agent
	m     int64
	rev   uint64
	until time.Time
}

// holdHeap orders holds by expiry, earliest first (container/heap).
type holdHeap []hold

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *holdHeap) Push(x any)        { *h = append(*h, x.(hold)) }
func (h *holdHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type agent struct {
	id        string
	available bool
	start     int64 // minute index of the first slot
	slots     map[int64]entry
}

// offers says whether the agent offers its minute m to tickets.
func (a *agent) offers(m int64) bool { return a.available && a.start <= m }

// Calendar indexes one tenant's agents and agent-minutes. It is not safe
// for concurrent use: the owner serialises calls.
type Calendar struct {
	agents map[string]*agent
	order  []*agent // by id: ties between agents go to the smallest id
	base   int64    // minute index of the first indexed minute
	holds  holdHeap
	frozen int64 // minutes after ceilMinute(now) where nothing moves

	// Per indexed minute, over the agents that offer it (index.go): free
	// slots; and, with the plan (built when a placement first needs to
	// move tickets, kept after), the latest Last of a movable ticket (0:
	// none) and its agent, stale when that ticket left. dirty: the index
	// must be rebuilt (after a rebase), the plan dropped.
	free   []int32
	latest []int64
	top    []*agent // the agent of latest's ticket
	stale  []bool
	dirty  bool
	// plan is the feasibility model of the minutes >= f (the frozen
	// horizon it was last advanced to); nil until a placement needs it.
	plan *feasible.Plan
	f    int64

	mismatches int // plan said a ticket fits and the search found no path
}

// New returns an empty calendar indexing minutes around now, with no
// frozen horizon.
func New(now time.Time) *Calendar {
	return &Calendar{
		agents: make(map[string]*agent),
		base:   minuteIndex(now) - backlog,
		free:   make([]int32, span),
	}
}

func (c *Calendar) inRange(m int64) bool { return m >= c.base && m < c.base+span }

// SetFrozen sets the frozen horizon: no ticket at a minute before
// ceilMinute(now)+minutes moves, and none moves into one (a new ticket may
// still take a free one). Negative counts as 0.
func (c *Calendar) SetFrozen(minutes int) {
	if m := int64(max(minutes, 0)); m != c.frozen {
		c.frozen = m
		c.plan = nil // rebuilt for the new horizon when next needed
	}
}

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

// set stores e for a's minute m and keeps the index and the plan in step.
func (c *Calendar) set(a *agent, m int64, e entry) {
	old := a.slots[m]
	if !e.busy() && e.rev == 0 {
		delete(a.slots, m)
	} else {
		a.slots[m] = e
	}
	c.reindex(a, m, old, e)
}

// record sets e's record to mark at rev, queueing a hold's expiry.
func (c *Calendar) record(a *agent, m int64, e *entry, rev uint64, mark Mark) {
	e.state, e.rev, e.until, e.last = mark.State, rev, time.Time{}, 0
	switch mark.State {
	case Held:
		e.until = mark.Until
		heap.Push(&c.holds, hold{a: a, m: m, rev: rev, until: mark.Until})
	case Busy:
		if !mark.Last.IsZero() {
			e.last = minuteIndex(mark.Last)
		}
	}
}

// SetAgent adds or updates an agent. Marking it unavailable keeps what is
// known of its slots (they stay reserved in KV) but it gets no new ones;
// its confirmed tickets still to be served are Stranded.
func (c *Calendar) SetAgent(ag Agent) {
	a := c.ensure(ag.ID)
	start := a.start
	if ag.Available {
		start = minuteIndex(AgentStart(ag.Since))
	}
	if a.available == ag.Available && a.start == start {
		return
	}
	was, from := a.available, a.start
	a.available, a.start = ag.Available, start
	c.offering(a, was, from)
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

// ExpireHolds frees every hold whose expiry is at or before now (a hold
// is busy only while now is before its HoldExpiresAt): the minute is free
// again in every calendar without any write, at the hold's revision.
func (c *Calendar) ExpireHolds(now time.Time) {
	for len(c.holds) > 0 && !now.Before(c.holds[0].until) {
		h := heap.Pop(&c.holds).(hold)
		if !c.inRange(h.m) {
			continue
		}
		e, ok := h.a.slots[h.m]
		if !ok || e.state != Held || e.rev != h.rev || !e.until.Equal(h.until) {
			continue // replaced since: a newer record decides
		}
		e.state, e.until = Free, time.Time{}
		c.set(h.a, h.m, e)
	}
}

// window is [first, last] as minute indexes, the calendar rebased so that
// it indexes all of it; ok is false for an empty window.
func (c *Calendar) window(first, last time.Time) (f, l int64, ok bool) {
	f, l = minuteIndex(first), minuteIndex(last)
	if l < f {
		return 0, 0, false
	}
	if f < c.base || l >= c.base+span {
		c.rebase(f - backlog)
	}
	return f, l, true
}

// claim marks the slot claimed.
func (c *Calendar) claim(s Slot) {
	a, m := c.agents[s.Agent], minuteIndex(s.Minute)
	e := a.slots[m]
	e.claimed = true
	c.set(a, m, e)
}

// settle ends a claim: fn gets the entry with claimed cleared.
func (c *Calendar) settle(s Slot, fn func(a *agent, m int64, e *entry)) {
	a, ok := c.agents[s.Agent]
	m := minuteIndex(s.Minute)
	if !ok || !c.inRange(m) {
		return // rebased away meanwhile: nothing to keep
	}
	e := a.slots[m]
	e.claimed = false
	fn(a, m, &e)
	c.set(a, m, e)
}

// Taken ends a claim whose KV write succeeded at revision rev with a
// record that says mark: known at once, without waiting for the watch.
func (c *Calendar) Taken(cl Claim, rev uint64, mark Mark) {
	c.settle(cl.Slot, func(a *agent, m int64, e *entry) {
		if rev > e.rev {
			c.record(a, m, e, rev, mark)
		}
	})
}

// Lost ends a claim whose write found a newer record than cl.Rev. Unless
// the watch delivered something newer for the key since the claim (then
// it knows better), the slot is busy, and fixed, until an event says
// otherwise.
func (c *Calendar) Lost(cl Claim) {
	c.settle(cl.Slot, func(_ *agent, _ int64, e *entry) {
		if e.rev <= cl.Rev {
			e.state, e.until, e.last = Busy, time.Time{}, 0
		}
	})
}

// Abandon ends a claim that wrote nothing and learned nothing.
func (c *Calendar) Abandon(cl Claim) { c.settle(cl.Slot, func(*agent, int64, *entry) {}) }

// Set applies a record of the slot's key at revision rev, written by
// anyone (a watch update, or this process's own confirm or release): an
// older or already seen revision changes nothing.
func (c *Calendar) Set(s Slot, rev uint64, mark Mark) {
	m := minuteIndex(s.Minute)
	if !c.inRange(m) {
		return
	}
	a := c.ensure(s.Agent)
	e := a.slots[m]
	if rev <= e.rev {
		return
	}
	c.record(a, m, &e, rev, mark)
	c.set(a, m, e)
}

// LoadSlots replaces what the calendar knows of KV with a snapshot (a
// rebuilt watch): every key not in it is free and never written. Claims
// in flight stay.
func (c *Calendar) LoadSlots(entries []Entry) {
	for _, a := range c.order {
		for m, e := range a.slots {
			e.state, e.until, e.rev, e.last = Free, time.Time{}, 0, 0
			c.set(a, m, e)
		}
	}
	for _, en := range entries {
		c.Set(en.Slot, en.Rev, en.Mark)
	}
}

// rebase moves the indexed range to start at base, dropping what falls
// outside it; the index is rebuilt when next needed.
func (c *Calendar) rebase(base int64) {
	c.base = base
	for _, a := range c.order {
		for m := range a.slots {
			if !c.inRange(m) {
				delete(a.slots, m)
			}
		}
	}
	c.dirty = true
}

// Reserved reports whether the slot's newest known record keeps it busy
// (confirmed, unreadable, or a hold not yet expired by ExpireHolds).
func (c *Calendar) Reserved(s Slot) bool {
	a, ok := c.agents[s.Agent]
	return ok && a.slots[minuteIndex(s.Minute)].state != Free
}

// Rev is the newest revision known of the slot's key (0: never written).
func (c *Calendar) Rev(s Slot) uint64 {
	a, ok := c.agents[s.Agent]
	if !ok {
		return 0
	}
	return a.slots[minuteIndex(s.Minute)].rev
}

// Free counts the free agent-minutes in [first, last] that Claim could
// hand out at now.
func (c *Calendar) Free(now, first, last time.Time) int {
	c.sync(now)
	n := 0
	for m := minuteIndex(first); m <= minuteIndex(last); m++ {
		if c.inRange(m) {
			n += int(c.free[m-c.base])
			continue
		}
		for _, a := range c.order {
			if a.offers(m) {
				n++ // not indexed: never written as far as the calendar knows
			}
		}
	}
	return n
}

// Offered counts the agent-minutes in [first, last] that the available
// agents offer, free or not (Free's count and the busy ones): the
// bookable capacity, for the utilisation figure. It costs one look at
// each agent.
func (c *Calendar) Offered(first, last time.Time) int {
	f, l := minuteIndex(first), minuteIndex(last)
	n := 0
	for _, a := range c.order {
		if !a.available {
			continue
		}
		if s := max(f, a.start); s <= l {
			n += int(l - s + 1)
		}
	}
	return n
}
