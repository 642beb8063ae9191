// Package feasible is the pure core of feasibility admission (issue 10):
// accept a unit-length ticket (one agent-minute) exactly when it and every
// ticket already accepted can still all be scheduled, each inside its own
// window, re-slotting the accepted ones as needed.
//
// Tickets matched to agent-minutes in their windows form a transversal
// matroid, so that greedy rule accepts, online and in any arrival order,
// as many tickets as the best schedule of all of them could (every basis
// of a matroid has the same size).
//
// A Plan knows nothing of ticket identities: an accepted ticket is its
// deadline, and tickets with the same deadline are interchangeable. It
// reads no clock and does no I/O; minutes are int64 minute indexes (Unix
// seconds / 60, floored), as workers/calendar uses. A Plan is not safe for
// concurrent use: the owner serialises calls.
//
// # The feasibility test
//
// Every accepted ticket that is not yet served must be open at the plan's
// current minute now (its earliest start is at or before now; Admit
// enforces it). For such tickets a schedule exists iff, for every minute t
// in [now, end),
//
//	slack(t) = capacity(now..t) - #{accepted, unserved, deadline <= t} >= 0
//
// (Hall's condition; the sets that matter are prefixes because every
// window starts at now). Adding a ticket with deadline D lowers slack on
// [D, end) by one, so it is feasible iff the plan is feasible and
// min slack over [D, end) >= 1. A lazy segment tree keeps slack(t) for
// every minute of the window: CanAdmit, Admit, Release and SetCapacity are
// O(log n) for a window of n minutes.
//
// A ticket whose window opens after now is refused (ErrNotOpen): the test
// above would let it use minutes before its start. Online admission never
// needs one, since a ticket is admitted when it is created; a caller that
// wants to admit one ahead of time must wait until the plan has advanced
// to its start.
//
// # Time
//
// Advance moves now forward minute by minute. The capacity of a minute
// that passes is spent on the unserved tickets with the earliest deadlines
// (earliest-deadline-first, which for unit tickets is optimal: whatever
// could be scheduled still can be), and those tickets are served: they
// leave the plan and Advance reports them with their agent-minute. This is
// exactly where Assign would have put them, so a caller that follows
// Assign's placement minute by minute and the plan agree.
package feasible

import (
	"errors"
	"fmt"
)

// Errors returned by Admit, Release and SetCapacity.
var (
	// ErrInfeasible: with this ticket the accepted tickets could not all be
	// scheduled (or the plan is already infeasible, see Deficit).
	ErrInfeasible = errors.New("feasible: ticket does not fit")
	// ErrNotOpen: the ticket's window opens after the plan's current minute.
	ErrNotOpen = errors.New("feasible: ticket window opens after the current minute")
	// ErrPast: the minute (deadline or capacity) is before the current minute.
	ErrPast = errors.New("feasible: minute is in the past")
	// ErrOutside: the minute is at or after the end of the plan's window.
	ErrOutside = errors.New("feasible: minute is beyond the plan's window")
	// ErrUnknown: no unserved accepted ticket has that deadline.
	ErrUnknown = errors.New("feasible: no accepted ticket with that deadline")
)

// Placement is one ticket on one agent-minute: Agent is an index in
// [0, Capacity(Minute)), the agents available in that minute as the caller
// numbers them.
type Placement struct {
	Deadline int64
	Minute   int64
	Agent    int
}

// Plan is the accepted tickets and the per-minute capacity of a window of
// whole minutes [base, base+n).
type Plan struct {
	base  int64
	cur   int   // index of the current minute; n once the window is over
	cap   []int // per minute: available agents
	cnt   []int // per deadline minute: accepted tickets not yet served
	total int   // sum of cnt
	slack *tree // slack(t) for t >= cur; values before cur are stale
}

// New returns an empty plan over the minutes [base, base+len(capacity)),
// capacity[i] agents being available in minute base+i, with current minute
// base. It panics on an empty window or a negative capacity.
func New(base int64, capacity []int) *Plan {
	if len(capacity) == 0 {
		panic("feasible: empty window")
	}
	n := len(capacity)
	p := &Plan{base: base, cap: make([]int, n), cnt: make([]int, n)}
	prefix := make([]int64, n)
	var sum int64
	for i, c := range capacity {
		if c < 0 {
			panic(fmt.Sprintf("feasible: negative capacity %d at minute %d", c, base+int64(i)))
		}
		p.cap[i] = c
		sum += int64(c)
		prefix[i] = sum
	}
	p.slack = newTree(prefix)
	return p
}

// Base is the window's first minute, End the minute just after its last.
func (p *Plan) Base() int64 { return p.base }

// End is the minute just after the window's last.
func (p *Plan) End() int64 { return p.base + int64(len(p.cap)) }

// Now is the plan's current minute: the earliest minute still to be spent.
func (p *Plan) Now() int64 { return p.base + int64(p.cur) }

// Accepted is the number of accepted tickets not yet served.
func (p *Plan) Accepted() int { return p.total }

// Capacity is the number of agents available in minute m (0 outside the
// window or in the past).
func (p *Plan) Capacity(m int64) int {
	if m < p.Now() || m >= p.End() {
		return 0
	}
	return p.cap[m-p.base]
}

// SetCapacity sets the agents available in minute m, m in [Now, End).
// Lowering it can make the plan infeasible: see Deficit.
func (p *Plan) SetCapacity(m int64, n int) error {
	switch {
	case n < 0:
		return fmt.Errorf("feasible: negative capacity %d", n)
	case m < p.Now():
		return ErrPast
	case m >= p.End():
		return ErrOutside
	}
	i := int(m - p.base)
	p.slack.add(i, len(p.cap)-1, int64(n-p.cap[i]))
	p.cap[i] = n
	return nil
}

// Deficit is how many accepted tickets cannot be served: 0 when they can
// all be scheduled. No fewer releases make the plan feasible again, and
// releasing that many of the earliest deadlines does (every minute with
// negative slack then gains one per release, or has no demand left).
// While Deficit > 0 nothing is admitted. O(log n).
func (p *Plan) Deficit() int {
	m, ok := p.slack.min(p.cur, len(p.cap)-1)
	if !ok || m >= 0 {
		return 0
	}
	return int(-m)
}

// check says why a ticket open from earliest with that deadline cannot be
// admitted, and the deadline's index.
func (p *Plan) check(earliest, deadline int64) (int, error) {
	switch {
	case deadline >= p.End():
		return 0, ErrOutside
	case deadline < p.Now():
		return 0, ErrPast
	case earliest > p.Now():
		return 0, ErrNotOpen
	case earliest > deadline:
		return 0, fmt.Errorf("feasible: window [%d, %d] is empty", earliest, deadline)
	}
	i := int(deadline - p.base)
	if p.Deficit() > 0 {
		return i, ErrInfeasible
	}
	if m, _ := p.slack.min(i, len(p.cap)-1); m < 1 {
		return i, ErrInfeasible
	}
	return i, nil
}

// CanAdmit says whether a ticket whose window is [earliest, deadline]
// would be admitted, changing nothing. O(log n).
func (p *Plan) CanAdmit(earliest, deadline int64) bool {
	_, err := p.check(earliest, deadline)
	return err == nil
}

// Admit accepts a ticket whose window is [earliest, deadline] iff all the
// accepted tickets and it can be scheduled; otherwise it changes nothing
// and says why (ErrInfeasible, ErrNotOpen, ErrPast, ErrOutside). O(log n).
func (p *Plan) Admit(earliest, deadline int64) error {
	i, err := p.check(earliest, deadline)
	if err != nil {
		return err
	}
	p.slack.add(i, len(p.cap)-1, -1)
	p.cnt[i]++
	p.total++
	return nil
}

// Release forgets one unserved accepted ticket with that deadline (a
// cancellation, or a hold that expired). It never makes the plan less
// feasible. O(log n).
func (p *Plan) Release(deadline int64) error {
	if deadline < p.Now() || deadline >= p.End() {
		return ErrUnknown
	}
	i := int(deadline - p.base)
	if p.cnt[i] == 0 {
		return ErrUnknown
	}
	p.cnt[i]--
	p.total--
	p.slack.add(i, len(p.cap)-1, 1)
	return nil
}

// Advance spends every minute before now (up to the window's end): in
// each, the unserved tickets with the earliest deadlines take its agents
// 0, 1, ... and are served. It returns those placements in order, and the
// deadlines of tickets whose deadline passed unserved (only possible while
// Deficit > 0). Advancing to a minute at or before Now does nothing. Past
// the window's end every ticket is served or missed; a caller that needs a
// later window builds a new Plan and admits Pending into it.
func (p *Plan) Advance(now int64) (served []Placement, missed []int64) {
	n := len(p.cap)
	for p.cur < n && p.Now() < now {
		t := p.cur
		j := t
		for agent := 0; agent < p.cap[t] && p.total > 0; {
			for p.cnt[j] == 0 {
				j++
			}
			x := min(p.cap[t]-agent, p.cnt[j])
			for range x {
				served = append(served, Placement{Deadline: p.base + int64(j), Minute: p.base + int64(t), Agent: agent})
				agent++
			}
			p.cnt[j] -= x
			p.total -= x
			p.slack.add(j, n-1, int64(x))
		}
		p.slack.add(t+1, n-1, -int64(p.cap[t]))
		if k := p.cnt[t]; k > 0 {
			for range k {
				missed = append(missed, p.base+int64(t))
			}
			p.cnt[t] = 0
			p.total -= k
			p.slack.add(t, n-1, int64(k))
		}
		p.cur++
	}
	return served, missed
}

// Pending is the deadlines of the unserved accepted tickets, earliest
// first.
func (p *Plan) Pending() []int64 {
	out := make([]int64, 0, p.total)
	for i := p.cur; i < len(p.cnt); i++ {
		for range p.cnt[i] {
			out = append(out, p.base+int64(i))
		}
	}
	return out
}

// Assign places every unserved accepted ticket on an agent-minute in
// [Now, deadline], earliest deadline first: minute by minute from Now,
// agents 0, 1, ... of that minute take the tickets with the earliest
// deadlines. No agent-minute is used twice. Tickets it cannot place (only
// while Deficit > 0) are returned as unplaced deadlines. O(n + tickets).
func (p *Plan) Assign() (placed []Placement, unplaced []int64) {
	cnt := append([]int(nil), p.cnt...)
	left := p.total
	j := p.cur
	placed = make([]Placement, 0, left)
	for t := p.cur; t < len(p.cap) && left > 0; t++ {
		for agent := 0; agent < p.cap[t] && left > 0; {
			for cnt[j] == 0 {
				j++
			}
			if j < t { // deadline passed: no minute left for it
				for range cnt[j] {
					unplaced = append(unplaced, p.base+int64(j))
				}
				left -= cnt[j]
				cnt[j] = 0
				continue
			}
			x := min(p.cap[t]-agent, cnt[j])
			for range x {
				placed = append(placed, Placement{Deadline: p.base + int64(j), Minute: p.base + int64(t), Agent: agent})
				agent++
			}
			cnt[j] -= x
			left -= x
		}
	}
	for ; left > 0; j++ {
		for range cnt[j] {
			unplaced = append(unplaced, p.base+int64(j))
		}
		left -= cnt[j]
	}
	return placed, unplaced
}

// Load returns a plan over the minutes [base, base+len(capacity)) whose
// current minute is now (clamped to the window), capacity[i] agents being
// available in minute base+i and demand[i] accepted tickets having the
// deadline base+i. The tickets are taken as they are, without a check: a
// caller that knows where each of them sits (a schedule exists) rebuilds
// its plan this way in O(n); Deficit says whether they fit. Minutes before
// now carry neither capacity nor tickets. It panics on an empty window, a
// length mismatch or a negative value.
func Load(base, now int64, capacity, demand []int) *Plan {
	n := len(capacity)
	if n == 0 || len(demand) != n {
		panic("feasible: empty window or demand of another length")
	}
	cur := int(min(max(now-base, 0), int64(n)))
	p := &Plan{base: base, cur: cur, cap: make([]int, n), cnt: make([]int, n)}
	prefix := make([]int64, n)
	var sum int64
	for i := cur; i < n; i++ {
		if capacity[i] < 0 || demand[i] < 0 {
			panic(fmt.Sprintf("feasible: negative capacity or demand at minute %d", base+int64(i)))
		}
		p.cap[i], p.cnt[i] = capacity[i], demand[i]
		p.total += demand[i]
		sum += int64(capacity[i] - demand[i])
		prefix[i] = sum
	}
	p.slack = newTree(prefix)
	return p
}

// Force accepts a ticket with that deadline without any check: the caller
// knows it is scheduled (it sits on an agent-minute the plan counts), or
// wants Deficit to tell. ErrPast or ErrOutside for a deadline outside
// [Now, End). O(log n).
func (p *Plan) Force(deadline int64) error {
	switch {
	case deadline < p.Now():
		return ErrPast
	case deadline >= p.End():
		return ErrOutside
	}
	i := int(deadline - p.base)
	p.slack.add(i, len(p.cap)-1, -1)
	p.cnt[i]++
	p.total++
	return nil
}

// Drop moves the current minute forward to now (up to the window's end)
// without serving anything: the capacity of the minutes passed leaves the
// plan, and so do the tickets whose deadline passed, which it counts. It
// is Advance for a caller that places tickets itself: it removes the
// tickets it served from those minutes first (Release, SetCapacity 0), so
// that the plan keeps only what is still to be scheduled. O(k log n) for k
// minutes.
func (p *Plan) Drop(now int64) (dropped int) {
	n := len(p.cap)
	for p.cur < n && p.Now() < now {
		t := p.cur
		p.slack.add(t+1, n-1, -int64(p.cap[t]))
		if k := p.cnt[t]; k > 0 {
			dropped += k
			p.total -= k
			p.slack.add(t+1, n-1, int64(k))
			p.cnt[t] = 0
		}
		p.cap[t] = 0
		p.cur++
	}
	return dropped
}

// Room is how many more tickets open now with that deadline the plan
// would admit one after the other: min slack over [deadline, End), 0 when
// the plan is infeasible or the deadline is outside [Now, End). O(log n).
func (p *Plan) Room(deadline int64) int {
	if deadline < p.Now() || deadline >= p.End() || p.Deficit() > 0 {
		return 0
	}
	m, _ := p.slack.min(int(deadline-p.base), len(p.cap)-1)
	return int(max(m, 0))
}
