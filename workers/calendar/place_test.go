package calendar

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"tms/subjects"
)

// The tests of placement drive a Calendar and, beside it, a model of the
// KV (world): which ticket, hold or unreadable record sits on each
// agent-minute. Every placement is checked against the model: inside the
// windows, no slot twice, nothing moved from or into the frozen zone, the
// revisions the writes replace, and the fewest moves, found by a plain
// breadth-first search for an augmenting path over the model's bipartite
// graph (tickets to the agent-minutes of their windows). The current
// tickets are a matching of all of them, so the new one fits exactly when
// such a path exists (Berge): that is the exact optimum Place must match
// at every arrival.

type kind uint8

const (
	kFree    kind = iota
	kTicket       // confirmed, window known: movable in the flexible zone
	kUnknown      // confirmed, window unknown: fixed
	kHeld         // a live hold: fixed
)

type cell struct {
	rev   uint64
	kind  kind
	first int64 // kTicket: its window, minute indexes
	last  int64
	until time.Time // kHeld
}

type wAgent struct {
	avail bool
	start int64
}

type world struct {
	t      *testing.T
	c      *Calendar
	now    time.Time
	frozen int64
	ids    []string
	agents map[string]*wAgent
	cells  map[Slot]*cell
	rev    uint64
	// Placements claimed and not yet written: their slots are neither
	// free nor movable until settled.
	overlap  bool // keep some placements in flight over the next arrival
	inflight []inflight
	claimed  map[Slot]bool

	accepted, refused, moved int
}

type inflight struct {
	p    Placement
	c    cell
	fail bool
}

func newWorld(t *testing.T, nAgents int, frozen int) *world {
	w := &world{t: t, c: New(t0), now: t0, frozen: int64(frozen), agents: map[string]*wAgent{}, cells: map[Slot]*cell{}, claimed: map[Slot]bool{}}
	w.c.SetFrozen(frozen)
	for i := range nAgents {
		w.setAgent(fmt.Sprintf("a%d", i), true, t0.Add(-time.Hour))
	}
	return w
}

func (w *world) setAgent(id string, avail bool, since time.Time) {
	a, ok := w.agents[id]
	if !ok {
		a = &wAgent{}
		w.agents[id] = a
		w.ids = append(w.ids, id)
		slices.Sort(w.ids)
	}
	a.avail = avail
	if avail {
		a.start = minuteIndex(AgentStart(since))
	}
	w.c.SetAgent(Agent{ID: id, Available: avail, Since: since})
}

func (w *world) horizon() int64 { return minuteIndex(ceilMinute(w.now)) + w.frozen }

func (w *world) offered(s Slot) bool {
	a, ok := w.agents[s.Agent]
	return ok && a.avail && a.start <= minuteIndex(s.Minute)
}

func (w *world) cell(s Slot) cell {
	if c, ok := w.cells[s]; ok {
		return *c
	}
	return cell{}
}

// free says whether the model has the slot free (a hold past its expiry
// is free).
func (w *world) free(s Slot) bool {
	if w.claimed[s] {
		return false
	}
	c := w.cell(s)
	return c.kind == kFree || (c.kind == kHeld && !w.now.Before(c.until))
}

func (w *world) slot(id string, m int64) Slot { return Slot{Agent: id, Minute: minuteTime(m)} }

// earliestFree is the earliest free offered slot in [lo, hi] by the
// model, ties by agent id.
func (w *world) earliestFree(lo, hi int64) (Slot, bool) {
	for m := lo; m <= hi; m++ {
		for _, id := range w.ids {
			if s := w.slot(id, m); w.offered(s) && w.free(s) {
				return s, true
			}
		}
	}
	return Slot{}, false
}

// bfs is the fewest tickets to move so that a ticket allowed in [lo, hi]
// (minutes >= the horizon) gets a slot, or -1: a breadth-first search
// over slots, where a movable ticket on a reached slot reaches every
// offered slot in [horizon, its last].
func (w *world) bfs(lo, hi int64) int {
	f := w.horizon()
	lo = max(lo, f)
	seen := map[Slot]bool{}
	level := [][2]int64{{lo, hi}}
	for moves := 0; len(level) > 0; moves++ {
		var next [][2]int64
		for _, win := range level {
			for m := win[0]; m <= win[1]; m++ {
				for _, id := range w.ids {
					s := w.slot(id, m)
					if seen[s] || !w.offered(s) {
						continue
					}
					seen[s] = true
					if w.free(s) {
						return moves
					}
					if c := w.cell(s); c.kind == kTicket && !w.claimed[s] {
						next = append(next, [2]int64{f, c.last})
					}
				}
			}
		}
		level = next
	}
	return -1
}

// check verifies a placement against the model before it is applied;
// rescue: Claims[0] is the stranded ticket's own slot.
func (w *world) check(p Placement, first, last int64, rescue bool) {
	t := w.t
	t.Helper()
	f := w.horizon()
	if len(p.Claims) == 0 || len(p.Lasts) != len(p.Claims) || !p.Lasts[0].IsZero() || p.Moves() != len(p.Claims)-1 {
		t.Fatalf("malformed placement %+v", p)
	}
	seen := map[Slot]bool{}
	for i, cl := range p.Claims {
		if seen[cl.Slot] {
			t.Fatalf("slot %v twice in %+v", cl.Slot, p)
		}
		seen[cl.Slot] = true
		if got := w.cell(cl.Slot).rev; got != cl.Rev {
			t.Fatalf("claim %d %v replaces rev %d, the KV has %d", i, cl.Slot, cl.Rev, got)
		}
		if !w.offered(cl.Slot) && !(rescue && i == 0) {
			t.Fatalf("claim %d %v on a slot no available agent offers", i, cl.Slot)
		}
	}
	if m := minuteIndex(p.Claims[0].Minute); !rescue && (m < first || m > last) {
		t.Fatalf("new ticket at %v outside [%v, %v]", p.Claims[0].Minute, minuteTime(first), minuteTime(last))
	}
	for i := 1; i < len(p.Claims); i++ {
		from, to := p.Claims[i-1], p.Claims[i]
		c := w.cell(from.Slot)
		if c.kind != kTicket || w.claimed[from.Slot] {
			t.Fatalf("claim %d: %v holds %+v (claimed %v), not a movable ticket", i-1, from.Slot, c, w.claimed[from.Slot])
		}
		fm, tm := minuteIndex(from.Minute), minuteIndex(to.Minute)
		if fm < f && !(rescue && i == 1) {
			t.Fatalf("ticket moved from %v, before the horizon %v", from.Minute, minuteTime(f))
		}
		if tm < f || tm < c.first || tm > c.last {
			t.Fatalf("ticket of window [%v, %v] moved to %v (horizon %v)", minuteTime(c.first), minuteTime(c.last), to.Minute, minuteTime(f))
		}
		if !p.Lasts[i].Equal(minuteTime(c.last)) {
			t.Fatalf("Lasts[%d] = %v, the ticket's last is %v", i, p.Lasts[i], minuteTime(c.last))
		}
	}
	if end := p.Claims[len(p.Claims)-1]; !w.free(end.Slot) {
		t.Fatalf("the path ends on %v, which is not free: %+v", end.Slot, w.cell(end.Slot))
	}
}

// apply writes a checked placement: the new record (mark) on Claims[0],
// each moved ticket one step along, as one batch; or, one time in fail,
// the batch fails and every claim is abandoned.
func (w *world) apply(p Placement, newCell cell, fail bool) {
	if fail {
		for _, cl := range p.Claims {
			w.c.Abandon(cl)
		}
		return
	}
	cells := make([]cell, len(p.Claims))
	cells[0] = newCell
	for i := 1; i < len(p.Claims); i++ {
		cells[i] = w.cell(p.Claims[i-1].Slot)
	}
	for i, cl := range p.Claims {
		w.rev++
		c := cells[i]
		c.rev = w.rev
		w.cells[cl.Slot] = &c
		w.c.Taken(cl, w.rev, c.mark())
	}
	w.moved += p.Moves()
}

func (c cell) mark() Mark {
	switch c.kind {
	case kTicket:
		return Mark{State: Busy, Last: minuteTime(c.last)}
	case kUnknown:
		return Mark{State: Busy}
	case kHeld:
		return Mark{State: Held, Until: c.until}
	}
	return Mark{State: Free}
}

// arrive places a new ticket (or a hold) with window [first, last] and
// compares with the model: accepted exactly when the model says it fits,
// the earliest free slot when there is one, else the fewest moves.
func (w *world) arrive(first, last int64, hold, fail bool) bool {
	t := w.t
	t.Helper()
	want := -1
	if _, ok := w.earliestFree(first, last); ok {
		want = 0
	} else if last >= w.horizon() {
		want = w.bfs(first, last)
	}
	w.c.sync(w.now)
	if hz := w.horizon(); want != 0 && last >= hz {
		fits := w.c.model(hz).Room(last) >= 1
		if _, found := w.c.search(hz, max(first, hz), last); fits != found {
			t.Fatalf("the plan says %v, the search %v", fits, found)
		}
	}
	n, cp := w.c.Capacity(w.now, minuteTime(first), minuteTime(last))
	p, ok := w.c.Place(w.now, minuteTime(first), minuteTime(last))
	if ok != (want >= 0) {
		t.Fatalf("Place [%v, %v] at %v: ok %v, the model says %d moves (-1: no fit)", minuteTime(first), minuteTime(last), w.now, ok, want)
	}
	if (n > 0) != ok || !slices.Equal(cp.Claims, p.Claims) {
		t.Fatalf("Capacity says %d, %+v; Place says %v, %+v", n, cp, ok, p)
	}
	if w.c.mismatches != 0 {
		t.Fatalf("plan and search disagreed")
	}
	if !ok {
		w.refused++
		return false
	}
	w.check(p, first, last, false)
	if p.Moves() != want {
		t.Fatalf("placement moves %d tickets, the fewest is %d: %+v", p.Moves(), want, p)
	}
	if want == 0 {
		if s, _ := w.earliestFree(first, last); s != p.Claims[0].Slot {
			t.Fatalf("fast path took %v, the earliest free is %v", p.Claims[0].Slot, s)
		}
	}
	c := cell{kind: kTicket, first: first, last: last}
	if hold {
		c = cell{kind: kHeld, until: w.now.Add(time.Duration(1+w.rev%90) * time.Second)}
	}
	if !fail {
		w.accepted++
	}
	if w.overlap && w.rev%5 == 0 { // written after the next arrival
		w.inflight = append(w.inflight, inflight{p, c, fail})
		for _, cl := range p.Claims {
			w.claimed[cl.Slot] = true
		}
		return true
	}
	w.apply(p, c, fail)
	return true
}

// settle writes the placements in flight, in order.
func (w *world) settle() {
	for _, f := range w.inflight {
		for _, cl := range f.p.Claims {
			delete(w.claimed, cl.Slot)
		}
		w.apply(f.p, f.c, f.fail)
	}
	w.inflight = nil
}

// rescueAll rescues every stranded ticket, checking each against the
// model.
func (w *world) rescueAll(fail bool) {
	t := w.t
	t.Helper()
	from := minuteIndex(ceilMinute(w.now))
	var want []Stranded
	for s, c := range w.cells {
		if c.kind == kTicket && !w.offered(s) && minuteIndex(s.Minute) >= from && c.last >= minuteIndex(s.Minute) {
			want = append(want, Stranded{Slot: s, Rev: c.rev, Last: minuteTime(c.last)})
		}
	}
	slices.SortFunc(want, func(x, y Stranded) int {
		return cmp.Or(x.Last.Compare(y.Last), x.Minute.Compare(y.Minute), cmp.Compare(x.Agent, y.Agent))
	})
	got := w.c.Stranded(w.now)
	if !slices.Equal(got, want) {
		t.Fatalf("Stranded = %v, want %v", got, want)
	}
	for _, s := range got {
		c := w.cell(s.Slot)
		moves := -1
		if b := w.bfs(w.horizon(), c.last); b >= 0 {
			moves = b + 1
		}
		p, ok := w.c.Rescue(w.now, s.Slot)
		if ok != (moves >= 0) {
			t.Fatalf("Rescue %v (last %v) at %v: ok %v, the model says %d moves", s.Slot, s.Last, w.now, ok, moves)
		}
		if !ok {
			continue
		}
		w.check(p, 0, 0, true)
		if p.Moves() != moves {
			t.Fatalf("rescue moves %d tickets, the fewest is %d: %+v", p.Moves(), moves, p)
		}
		w.apply(p, cell{}, fail)
	}
}

// step is one operation, op in [0, 20), its parameters from rng.
func (w *world) step(op int, rng *rand.Rand) {
	f := minuteIndex(ceilMinute(w.now))
	if op >= 9 {
		w.settle() // only arrivals overlap a write in flight
	}
	switch {
	case op < 9: // an arrival, a hold one time in four
		w.arrive(f, f+int64(rng.IntN(40)), rng.IntN(4) == 0, rng.IntN(8) == 0)
	case op < 11: // a cancellation or a released hold
		for s, c := range w.cells {
			if c.kind != kFree {
				w.rev++
				w.cells[s] = &cell{rev: w.rev}
				w.c.Set(s, w.rev, free)
				break
			}
		}
	case op < 12: // another process writes a record the calendar cannot move
		s := w.slot(w.ids[rng.IntN(len(w.ids))], f+int64(rng.IntN(40)))
		if w.free(s) {
			w.rev++
			w.cells[s] = &cell{rev: w.rev, kind: kUnknown}
			w.c.Set(s, w.rev, busy)
		}
	case op < 16:
		w.now = w.now.Add(time.Duration(rng.IntN(150)) * time.Second)
		for _, c := range w.cells {
			if c.kind == kHeld && !w.now.Before(c.until) {
				c.kind, c.until = kFree, time.Time{}
			}
		}
	case op < 18: // an agent leaves or comes back, then a re-plan
		id := w.ids[rng.IntN(len(w.ids))]
		if rng.IntN(6) == 0 {
			id = fmt.Sprintf("a%d", len(w.ids)) // a new one
		}
		w.setAgent(id, rng.IntN(2) == 0, w.now.Add(time.Duration(rng.IntN(20*60)-300)*time.Second))
		w.rescueAll(rng.IntN(8) == 0)
	case op < 19:
		w.frozen = int64(rng.IntN(6))
		w.c.SetFrozen(int(w.frozen))
	default: // the watch is rebuilt from a snapshot
		var entries []Entry
		for s, c := range w.cells {
			entries = append(entries, Entry{Slot: s, Rev: c.rev, Mark: c.mark()})
		}
		w.c.LoadSlots(entries)
	}
}

// TestPlaceRandomTraces: thousands of random traces of arrivals, holds,
// cancellations, foreign records, agents leaving and joining (with
// re-plans), time passing and frozen horizons 0..5; every Place, Capacity
// and Rescue against the model's exact answer, and the index and plan
// against a rebuild.
func TestPlaceRandomTraces(t *testing.T) {
	t.Parallel()
	var accepted, refused, moved int
	for seed := uint64(0); seed < 2000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		w := newWorld(t, 1+rng.IntN(4), rng.IntN(6))
		w.overlap = true
		for i := range 120 {
			w.step(rng.IntN(20), rng)
			if seed < 200 || i%20 == 0 {
				checkCounts(t, w.c)
			}
		}
		checkCounts(t, w.c)
		accepted, refused, moved = accepted+w.accepted, refused+w.refused, moved+w.moved
	}
	if moved == 0 || refused == 0 {
		t.Fatalf("the traces never moved (%d) or never refused (%d): they test nothing", moved, refused)
	}
	t.Logf("accepted %d, refused %d, moves %d", accepted, refused, moved)
}

// TestPlaceAcceptsTheOptimum: tickets all created at t0 arrive in a
// random order on agents with random starts (frozen 0, no time passing):
// Place accepts exactly as many as a maximum bipartite matching of all of
// them to agent-minutes of their windows, computed here independently.
func TestPlaceAcceptsTheOptimum(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		c := New(t0)
		nAgents := 1 + rng.IntN(4)
		starts := make([]int64, nAgents)
		f := minuteIndex(t0)
		for i := range nAgents {
			starts[i] = f + int64(rng.IntN(10))
			c.SetAgent(Agent{ID: fmt.Sprintf("a%d", i), Available: true, Since: minuteTime(starts[i])})
		}
		lasts := make([]int64, 20+rng.IntN(60))
		accepted := 0
		for i := range lasts {
			lasts[i] = f + int64(rng.IntN(25))
			p, ok := c.Place(t0, t0, minuteTime(lasts[i]))
			if !ok {
				continue
			}
			accepted++
			for j, cl := range p.Claims {
				last := p.Lasts[j]
				if j == 0 {
					last = minuteTime(lasts[i])
				}
				c.Taken(cl, uint64(1000*i+j+1), Mark{State: Busy, Last: last})
			}
		}
		if want := maxMatching(lasts, starts, f); accepted != want {
			t.Fatalf("seed %d: accepted %d of %d, the best schedule takes %d", seed, accepted, len(lasts), want)
		}
		checkCounts(t, c)
	}
}

// maxMatching is the size of a maximum matching of tickets (window [f,
// last]) to agent-minutes (agent i offers minutes from starts[i]), by
// augmenting paths (Kuhn).
func maxMatching(lasts, starts []int64, f int64) int {
	type slot struct {
		agent int
		m     int64
	}
	owner := map[slot]int{}
	var try func(t int, seen map[slot]bool) bool
	try = func(t int, seen map[slot]bool) bool {
		for m := f; m <= lasts[t]; m++ {
			for a, start := range starts {
				s := slot{a, m}
				if m < start || seen[s] {
					continue
				}
				seen[s] = true
				if o, ok := owner[s]; !ok || try(o, seen) {
					owner[s] = t
					return true
				}
			}
		}
		return false
	}
	n := 0
	for t := range lasts {
		if try(t, map[slot]bool{}) {
			n++
		}
	}
	return n
}

// TestPlaceIssueExample is issue 10's trace: 2 agents, 480 BRONZE then
// 200 GOLD created in the same minute. Earliest-free admission refuses
// every GOLD; Place accepts all 680, each GOLD moving one BRONZE.
func TestPlaceIssueExample(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2, 5)
	for i := range 680 {
		typ := subjects.Bronze
		if i >= 480 {
			typ = subjects.Gold
		}
		first, last, _ := Window(t0, typ)
		if !w.arrive(minuteIndex(first), minuteIndex(last), false, false) {
			t.Fatalf("ticket %d (%s) refused", i, typ)
		}
		if i >= 480 && w.moved != i-479 {
			t.Fatalf("GOLD %d: %d moves so far, want one each", i-480, w.moved)
		}
	}
	checkCounts(t, w.c)
	first, last, _ := Window(t0, subjects.Gold)
	// 240 GOLD minutes on 2 agents, 200 taken, and the 10 of the frozen
	// zone keep their BRONZE.
	if n, _ := w.c.Capacity(t0, first, last); n != 240-200-10 {
		t.Fatalf("room for %d more GOLD, want 30", n)
	}
}

// TestCapacityCountsWhatPlaceAccepts: Capacity's n tickets are then
// accepted one after the other, and the next one is refused.
func TestCapacityCountsWhatPlaceAccepts(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 5))
		w := newWorld(t, 1+rng.IntN(3), rng.IntN(6))
		for range 60 {
			w.step(rng.IntN(20), rng)
		}
		f := minuteIndex(ceilMinute(w.now))
		last := f + int64(rng.IntN(40))
		n, _ := w.c.Capacity(w.now, minuteTime(f), minuteTime(last))
		for i := range n {
			if !w.arrive(f, last, false, false) {
				t.Fatalf("seed %d: ticket %d of the %d Capacity promised refused", seed, i, n)
			}
		}
		if w.arrive(f, last, false, false) {
			t.Fatalf("seed %d: a ticket beyond Capacity's %d accepted", seed, n)
		}
		checkCounts(t, w.c)
	}
}

// FuzzPlace drives the world with op sequences from the fuzzer.
func FuzzPlace(f *testing.F) {
	f.Add(uint64(1), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19})
	f.Add(uint64(2), []byte{0, 0, 0, 0, 16, 16, 17, 0, 0, 12, 12, 0})
	f.Fuzz(func(t *testing.T, seed uint64, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		w := newWorld(t, 1+int(seed%4), int(seed/4%6))
		w.overlap = true
		for _, op := range ops {
			w.step(int(op%20), rng)
			checkCounts(t, w.c)
		}
	})
}

// TestPlaceWindowOpensLater: a new ticket whose window opens after the
// horizon takes the slot of a ticket that can move back, before that
// window, into the minutes the new one may not use.
func TestPlaceWindowOpensLater(t *testing.T) {
	t.Parallel()
	c := New(t0)
	c.SetAgent(Agent{ID: "a", Available: true, Since: t0})
	after := func(k int) time.Time { return t0.Add(time.Duration(k) * time.Minute) }
	c.Set(slot("a", after(2)), 1, Mark{State: Busy, Last: after(5)})
	for k := 3; k <= 5; k++ {
		c.Set(slot("a", after(k)), uint64(k), Mark{State: Busy, Last: after(5)})
	}
	p, ok := c.Place(t0, after(2), after(2))
	if !ok || p.Moves() != 1 || p.Claims[0].Slot != slot("a", after(2)) || p.Claims[1].Slot != slot("a", t0) || !p.Lasts[1].Equal(after(5)) {
		t.Fatalf("Place [t0+2, t0+2] = %+v, %v; want the ticket at t0+2 moved to t0", p, ok)
	}
	if _, ok := c.Place(t0, after(3), after(3)); !ok {
		t.Fatal("a second ticket at t0+3 refused: the one there can move to t0+1")
	}
	if _, ok := c.Place(t0, after(4), after(4)); ok {
		t.Fatal("a third ticket placed: every minute up to t0+5 is taken or claimed")
	}
	checkCounts(t, c)
}
