package feasible

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

const base = int64(29_000_000) // some minute index in 2025

// ticket is a window [created, deadline] of whole minutes.
type ticket struct{ created, deadline int64 }

// maxMatching is the exact optimum, independent of the plan: the largest
// number of tickets that can be matched to distinct agent-minutes inside
// their windows (augmenting paths, Kuhn's algorithm). Agent-minute (m, a)
// exists for a < capacity[m-from].
func maxMatching(from int64, capacity []int, tickets []ticket) int {
	type slot struct {
		minute int64
		agent  int
	}
	owner := map[slot]int{} // slot -> ticket index
	var try func(i int, seen map[slot]bool) bool
	try = func(i int, seen map[slot]bool) bool {
		for m := max(tickets[i].created, from); m <= tickets[i].deadline; m++ {
			k := int(m - from)
			if k < 0 || k >= len(capacity) {
				continue
			}
			for a := range capacity[k] {
				s := slot{m, a}
				if seen[s] {
					continue
				}
				seen[s] = true
				o, taken := owner[s]
				if !taken || try(o, seen) {
					owner[s] = i
					return true
				}
			}
		}
		return false
	}
	n := 0
	for i := range tickets {
		if try(i, map[slot]bool{}) {
			n++
		}
	}
	return n
}

// trace is a window's capacities and tickets in arrival order.
type trace struct {
	capacity []int
	tickets  []ticket
}

func randomTrace(r *rand.Rand) trace {
	n := 1 + r.IntN(12)
	maxCap := r.IntN(4)
	tr := trace{capacity: make([]int, n)}
	for i := range tr.capacity {
		tr.capacity[i] = r.IntN(maxCap + 1)
	}
	for range r.IntN(40) {
		c := base + int64(r.IntN(n))
		d := c + int64(r.IntN(int(base+int64(n)-c)))
		tr.tickets = append(tr.tickets, ticket{c, d})
	}
	// Arrival order: by creation; same-minute arrivals stay shuffled.
	slices.SortStableFunc(tr.tickets, func(a, b ticket) int { return int(a.created - b.created) })
	return tr
}

// runTrace processes tr online and checks the plan's claims: the number
// accepted is the exact optimum, and every accepted ticket gets an
// agent-minute in its window, none twice.
func runTrace(t *testing.T, tr trace) {
	t.Helper()
	p := New(base, tr.capacity)
	queue := map[int64][]int{} // deadline -> accepted tickets not yet placed
	used := map[[2]int64]bool{}
	placedIn := map[int]int64{}
	place := func(pl Placement) {
		q := queue[pl.Deadline]
		if len(q) == 0 {
			t.Fatalf("placement %+v: no accepted ticket with that deadline", pl)
		}
		i := q[0]
		queue[pl.Deadline] = q[1:]
		tk := tr.tickets[i]
		if pl.Minute < tk.created || pl.Minute > tk.deadline {
			t.Fatalf("ticket %+v placed at minute %d, outside its window", tk, pl.Minute)
		}
		if pl.Agent < 0 || pl.Agent >= tr.capacity[pl.Minute-base] {
			t.Fatalf("placement %+v: agent beyond the %d of that minute", pl, tr.capacity[pl.Minute-base])
		}
		k := [2]int64{pl.Minute, int64(pl.Agent)}
		if used[k] {
			t.Fatalf("agent-minute %v used twice", k)
		}
		used[k] = true
		placedIn[i] = pl.Minute
	}
	accepted := 0
	for i, tk := range tr.tickets {
		served, missed := p.Advance(tk.created)
		if len(missed) > 0 {
			t.Fatalf("missed %v on a feasible plan", missed)
		}
		for _, pl := range served {
			place(pl)
		}
		can := p.CanAdmit(tk.created, tk.deadline)
		err := p.Admit(tk.created, tk.deadline)
		if can != (err == nil) {
			t.Fatalf("CanAdmit %v but Admit %v", can, err)
		}
		if err != nil && !errors.Is(err, ErrInfeasible) {
			t.Fatalf("Admit(%+v): %v", tk, err)
		}
		if err == nil {
			accepted++
			queue[tk.deadline] = append(queue[tk.deadline], i)
		}
		if d := p.Deficit(); d != 0 {
			t.Fatalf("deficit %d after an admission", d)
		}
	}
	placed, unplaced := p.Assign()
	if len(unplaced) > 0 {
		t.Fatalf("Assign left %v unplaced on a feasible plan", unplaced)
	}
	for _, pl := range placed {
		place(pl)
	}
	if len(placedIn) != accepted {
		t.Fatalf("%d accepted, %d placed", accepted, len(placedIn))
	}
	if opt := maxMatching(base, tr.capacity, tr.tickets); accepted != opt {
		t.Fatalf("accepted %d, optimum %d (capacity %v, tickets %v)", accepted, opt, tr.capacity, tr.tickets)
	}
}

func TestOnlineAdmissionIsOptimal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 10))
	for i := range 5000 {
		tr := randomTrace(r)
		t.Run(fmt.Sprint(i), func(t *testing.T) { runTrace(t, tr) })
	}
}

// The issue's example, scaled: 2 agents, 480 BRONZE tickets with 8 h
// windows, then 200 GOLD with 1 h windows, all created at once: the greedy
// earliest-slot rule took 0 GOLD; every ticket fits.
func TestIssueExample(t *testing.T) {
	caps := slices.Repeat([]int{2}, 480)
	p := New(base, caps)
	for range 480 {
		if err := p.Admit(base, base+479); err != nil {
			t.Fatal(err)
		}
	}
	for range 120 {
		if err := p.Admit(base, base+59); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Admit(base, base+59); !errors.Is(err, ErrInfeasible) {
		t.Fatalf("121st GOLD in a 60-minute, 2-agent hour: %v", err)
	}
	if got, want := p.Accepted(), 600; got != want {
		t.Fatalf("accepted %d, want %d", got, want)
	}
}

func TestErrors(t *testing.T) {
	p := New(base, []int{1, 1, 1})
	if err := p.Admit(base+1, base+2); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("future window: %v", err)
	}
	if err := p.Admit(base, base+3); !errors.Is(err, ErrOutside) {
		t.Fatalf("beyond the window: %v", err)
	}
	if err := p.Release(base); !errors.Is(err, ErrUnknown) {
		t.Fatalf("release of nothing: %v", err)
	}
	p.Advance(base + 1)
	if err := p.Admit(base, base); !errors.Is(err, ErrPast) {
		t.Fatalf("past deadline: %v", err)
	}
	if err := p.SetCapacity(base, 3); !errors.Is(err, ErrPast) {
		t.Fatalf("capacity of a spent minute: %v", err)
	}
	if err := p.SetCapacity(base+3, 3); !errors.Is(err, ErrOutside) {
		t.Fatalf("capacity beyond the window: %v", err)
	}
	if err := p.SetCapacity(base+1, -1); err == nil {
		t.Fatal("negative capacity accepted")
	}
	if err := p.Admit(base+1, base); err == nil {
		t.Fatal("empty window accepted")
	}
	if got := p.Now(); got != base+1 {
		t.Fatalf("Now %d, want %d", got, base+1)
	}
	p.Advance(base + 100)
	if got := p.Now(); got != p.End() {
		t.Fatalf("Now %d after the window, want End %d", got, p.End())
	}
	if p.CanAdmit(base+3, base+3) {
		t.Fatal("admission after the window's end")
	}
}

// pendingTickets are the plan's unserved tickets as the matching sees
// them: all open at now.
func pendingTickets(p *Plan) []ticket {
	var out []ticket
	for _, d := range p.Pending() {
		out = append(out, ticket{p.Now(), d})
	}
	return out
}

// TestRandomOperations mixes admissions, releases, capacity changes and
// time, and checks every answer of the plan against the matching of its
// pending tickets onto the remaining agent-minutes: Deficit is how many do
// not fit, CanAdmit is true exactly when everything plus the new ticket
// fits, and Advance serves exactly what Assign placed in the spent minute.
func TestRandomOperations(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 10))
	for iter := range 2000 {
		n := 1 + r.IntN(10)
		caps := make([]int, n)
		for i := range caps {
			caps[i] = r.IntN(4)
		}
		p := New(base, caps)
		for step := range 60 {
			if p.Now() >= p.End() {
				break
			}
			now := p.Now()
			rest := caps[now-base:]
			pend := pendingTickets(p)
			fit := maxMatching(now, rest, pend)
			if got, want := p.Deficit(), len(pend)-fit; got != want {
				t.Fatalf("iter %d step %d: deficit %d, matching says %d", iter, step, got, want)
			}
			if k := p.Deficit(); k > 0 {
				q := New(now, rest)
				for _, tk := range pend[k:] {
					q.Admit(now, tk.deadline)
				}
				if q.Accepted() != len(pend)-k || q.Deficit() != 0 {
					t.Fatalf("iter %d step %d: without the %d earliest deadlines, %d of %d fit", iter, step, k, q.Accepted(), len(pend)-k)
				}
			}
			for d := now; d < p.End(); d++ {
				want := fit == len(pend) && maxMatching(now, rest, append(slices.Clone(pend), ticket{now, d})) == len(pend)+1
				if got := p.CanAdmit(now, d); got != want {
					t.Fatalf("iter %d step %d: CanAdmit(%d) %v, matching says %v", iter, step, d-base, got, want)
				}
			}
			switch op := r.IntN(10); {
			case op < 5:
				p.Admit(now, now+int64(r.IntN(int(p.End()-now))))
			case op < 7:
				if len(pend) > 0 {
					if err := p.Release(pend[r.IntN(len(pend))].deadline); err != nil {
						t.Fatal(err)
					}
				}
			case op < 9:
				m := now + int64(r.IntN(int(p.End()-now)))
				c := r.IntN(4)
				if err := p.SetCapacity(m, c); err != nil {
					t.Fatal(err)
				}
				caps[m-base] = c
				if p.Capacity(m) != c {
					t.Fatalf("Capacity(%d) %d, set %d", m, p.Capacity(m), c)
				}
			default:
				placed, unplaced := p.Assign()
				if len(placed)+len(unplaced) != len(pend) {
					t.Fatalf("Assign: %d placed + %d unplaced of %d", len(placed), len(unplaced), len(pend))
				}
				if len(placed) != fit && p.Deficit() == 0 {
					t.Fatalf("Assign placed %d of a feasible %d", len(placed), fit)
				}
				var first []Placement
				for _, pl := range placed {
					if pl.Minute == now {
						first = append(first, pl)
					}
				}
				served, missed := p.Advance(now + 1)
				if !slices.Equal(served, first) {
					t.Fatalf("Advance served %v, Assign had %v", served, first)
				}
				for _, pl := range served {
					if pl.Minute != now || pl.Deadline < now || pl.Agent >= caps[now-base] {
						t.Fatalf("bad served placement %+v", pl)
					}
				}
				for _, d := range missed {
					if d != now {
						t.Fatalf("missed deadline %d while advancing past %d", d, now)
					}
				}
				if got := len(pend) - len(served) - len(missed); got != p.Accepted() {
					t.Fatalf("accepted %d after advance, want %d", p.Accepted(), got)
				}
			}
		}
	}
}

// FuzzAdmission: the online count is the optimum and the placement is
// valid, on traces decoded from the fuzzer's bytes.
func FuzzAdmission(f *testing.F) {
	f.Add([]byte{3, 1, 2, 0, 0, 1, 1, 2, 0, 2})
	f.Add([]byte{8, 2, 2, 2, 2, 2, 2, 2, 2, 0, 7, 0, 7, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		n := 1 + int(data[0])%12
		data = data[1:]
		tr := trace{capacity: make([]int, n)}
		for i := range tr.capacity {
			if len(data) > 0 {
				tr.capacity[i] = int(data[0]) % 4
				data = data[1:]
			}
		}
		for len(data) >= 2 && len(tr.tickets) < 40 {
			c := int64(data[0]) % int64(n)
			d := c + int64(data[1])%(int64(n)-c)
			tr.tickets = append(tr.tickets, ticket{base + c, base + d})
			data = data[2:]
		}
		slices.SortStableFunc(tr.tickets, func(a, b ticket) int { return int(a.created - b.created) })
		runTrace(t, tr)
	})
}

// fullPlan is 1,000 agents over 480 minutes with every agent-minute taken
// but one per agent in the last minute, by tickets with random deadlines.
func fullPlan(b *testing.B) *Plan {
	const agents, minutes = 1000, 480
	p := New(base, slices.Repeat([]int{agents}, minutes))
	r := rand.New(rand.NewPCG(3, 10))
	for range agents * minutes {
		p.Admit(base, base+int64(r.IntN(minutes)))
	}
	for p.Admit(base, base+minutes-1) == nil {
	}
	if p.Accepted() != agents*minutes {
		b.Fatalf("accepted %d, want %d", p.Accepted(), agents*minutes)
	}
	if err := p.Release(base + minutes - 1); err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkCanAdmitFull(b *testing.B) {
	p := fullPlan(b)
	r := rand.New(rand.NewPCG(4, 10))
	ds := make([]int64, 1024)
	for i := range ds {
		ds[i] = base + int64(r.IntN(480))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p.CanAdmit(base, ds[i%len(ds)])
	}
}

// BenchmarkAdmitReleaseFull: one op is an Admit that succeeds (the one
// free agent-minute) and the Release that frees it again.
func BenchmarkAdmitReleaseFull(b *testing.B) {
	p := fullPlan(b)
	d := base + 479
	b.ResetTimer()
	for b.Loop() {
		if err := p.Admit(base, d); err != nil {
			b.Fatal(err)
		}
		p.Release(d)
	}
}

// BenchmarkAdmitRejectedFull: Admit on a calendar with no room left
// before the ticket's deadline.
func BenchmarkAdmitRejectedFull(b *testing.B) {
	p := fullPlan(b)
	p.Admit(base, base+479)
	b.ResetTimer()
	for b.Loop() {
		if p.Admit(base, base+240) == nil {
			b.Fatal("admitted into a full calendar")
		}
	}
}

// BenchmarkAdvanceFull: one op spends one minute of a full calendar (its
// 1,000 agent-minutes served), on a fresh plan every 480 minutes.
func BenchmarkAdvanceFull(b *testing.B) {
	p := fullPlan(b)
	b.ResetTimer()
	for b.Loop() {
		if p.Now() == p.End() {
			b.StopTimer()
			p = fullPlan(b)
			b.StartTimer()
		}
		p.Advance(p.Now() + 1)
	}
}

// TestLoadForceDropRoom: a plan kept by a caller that places tickets
// itself (Force, Release, SetCapacity, Drop) equals one Load rebuilds
// from its capacities and deadlines, and Room is how many more tickets
// of a deadline the matching fits.
func TestLoadForceDropRoom(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 12))
	for iter := range 1000 {
		n := 1 + r.IntN(10)
		caps := make([]int, n)
		for i := range caps {
			caps[i] = r.IntN(4)
		}
		p := Load(base, base+int64(r.IntN(3)), caps, make([]int, n))
		for i := range int(p.Now() - base) {
			caps[i] = 0 // before now: not in the plan
		}
		for step := range 40 {
			if p.Now() >= p.End() {
				break
			}
			now := p.Now()
			switch op := r.IntN(10); {
			case op < 5:
				if err := p.Force(now + int64(r.IntN(int(p.End()-now)))); err != nil {
					t.Fatal(err)
				}
			case op < 7:
				if pend := p.Pending(); len(pend) > 0 {
					if err := p.Release(pend[r.IntN(len(pend))]); err != nil {
						t.Fatal(err)
					}
				}
			case op < 9:
				m := now + int64(r.IntN(int(p.End()-now)))
				caps[m-base] = r.IntN(4)
				if err := p.SetCapacity(m, caps[m-base]); err != nil {
					t.Fatal(err)
				}
			default:
				to := now + 1 + int64(r.IntN(3))
				var gone int
				for _, d := range p.Pending() {
					if d < to {
						gone++
					}
				}
				if got := p.Drop(to); got != gone {
					t.Fatalf("iter %d step %d: Drop(%d) dropped %d, %d had passed", iter, step, to-base, got, gone)
				}
				for m := now; m < min(to, p.End()); m++ {
					caps[m-base] = 0
				}
			}
			now = p.Now()
			demand := make([]int, n)
			for _, d := range p.Pending() {
				demand[d-base]++
			}
			q := Load(base, now, caps, demand)
			if q.Deficit() != p.Deficit() || q.Accepted() != p.Accepted() {
				t.Fatalf("iter %d step %d: deficit %d accepted %d, rebuilt %d %d", iter, step, p.Deficit(), p.Accepted(), q.Deficit(), q.Accepted())
			}
			if now >= p.End() {
				break
			}
			pend := pendingTickets(p)
			rest := caps[now-base:]
			total := 0
			for _, c := range rest {
				total += c
			}
			for d := now; d < p.End(); d++ {
				want := 0
				if p.Deficit() == 0 {
					more := slices.Clone(pend)
					for range total {
						more = append(more, ticket{now, d})
					}
					want = maxMatching(now, rest, more) - len(pend)
				}
				if got := p.Room(d); got != want || q.Room(d) != want {
					t.Fatalf("iter %d step %d: Room(%d) %d, rebuilt %d, matching %d", iter, step, d-base, got, q.Room(d), want)
				}
			}
		}
	}
}
