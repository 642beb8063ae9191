package calendar

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"tms/subjects"
)

var t0 = at(10, 0, 0, 0)

func slot(agent string, m time.Time) Slot { return Slot{Agent: agent, Minute: m} }

// Marks of the three kinds of record.
var (
	busy = Mark{State: Busy}
	free = Mark{State: Free}
)

func heldUntil(t time.Time) Mark { return Mark{State: Held, Until: t} }

// checkCounts recomputes the index and the plan from the entries, minute
// by minute and agent by agent, and compares: the incremental upkeep
// must equal a rebuild from scratch.
func checkCounts(t *testing.T, c *Calendar) {
	t.Helper()
	for _, a := range c.order {
		for m := range a.slots {
			if !c.inRange(m) {
				t.Fatalf("agent %s has minute %d outside [%d, %d)", a.id, m, c.base, c.base+span)
			}
		}
	}
	if c.dirty {
		return // rebuilt before any use
	}
	var pending []int64
	for i := range int64(span) {
		m := c.base + i
		var free int32
		var latest int64
		capa := 0
		for _, a := range c.order {
			if !a.offers(m) {
				continue
			}
			e := a.slots[m]
			if !e.busy() {
				free++
			}
			if e.movable(m) {
				latest = max(latest, e.last)
				if c.plan != nil && m >= c.f {
					pending = append(pending, min(e.last, c.base+span-1))
				}
			}
			if capacity(e, m) {
				capa++
			}
		}
		if free != c.free[i] {
			t.Fatalf("free[%v] = %d, want %d", minuteTime(m), c.free[i], free)
		}
		if c.latest == nil {
			continue
		}
		if !c.stale[i] && latest != c.latest[i] {
			t.Fatalf("latest[%v] = %d, want %d", minuteTime(m), c.latest[i], latest)
		}
		if top := c.top[i]; !c.stale[i] && latest != 0 && (top == nil || !top.offers(m) || !top.slots[m].movable(m) || top.slots[m].last != latest) {
			t.Fatalf("top[%v] is not the agent of the latest ticket", minuteTime(m))
		}
		if c.stale[i] && latest > c.latest[i] {
			t.Fatalf("stale latest[%v] = %d below a remaining %d", minuteTime(m), c.latest[i], latest)
		}
		if c.plan != nil && m >= c.f {
			if got := c.plan.Capacity(m); got != capa {
				t.Fatalf("plan capacity at %v = %d, want %d", minuteTime(m), got, capa)
			}
		}
	}
	if c.plan != nil {
		slices.Sort(pending)
		if got := c.plan.Pending(); !slices.Equal(got, pending) {
			t.Fatalf("plan demand = %v, want %v", got, pending)
		}
		if d := c.plan.Deficit(); d != 0 {
			t.Fatalf("plan deficit %d: the tickets where they are are a schedule", d)
		}
	}
}

// claimAll claims until the calendar says no, marking each claim taken.
func claimAll(t *testing.T, c *Calendar, created time.Time, typ string) []Slot {
	t.Helper()
	first, last, _ := Window(created, typ)
	var got []Slot
	seen := map[Slot]bool{}
	for rev := uint64(1000); ; rev++ {
		cl, ok := c.Claim(t0, first, last)
		if !ok {
			break
		}
		if seen[cl.Slot] {
			t.Fatalf("slot %v handed out twice", cl.Slot)
		}
		seen[cl.Slot] = true
		if cl.Minute.Before(first) || cl.Minute.After(last) {
			t.Fatalf("slot %v outside [%v, %v]", cl.Minute, first, last)
		}
		c.Taken(cl, rev, busy)
		got = append(got, cl.Slot)
		if len(got) > 100000 {
			t.Fatal("runaway")
		}
	}
	checkCounts(t, c)
	return got
}

func TestClaimCapacityAtBoundaries(t *testing.T) {
	t.Parallel()
	ms := int(time.Millisecond)
	cases := []struct {
		created     time.Time
		typ         string
		agents      int
		want        int
		first, last time.Time
	}{
		{at(10, 0, 0, 0), subjects.Gold, 1, 120, at(10, 0, 0, 0), at(11, 59, 0, 0)},
		{at(10, 0, 0, ms), subjects.Gold, 1, 119, at(10, 1, 0, 0), at(11, 59, 0, 0)},
		{at(10, 0, 59, 999*ms), subjects.Gold, 1, 119, at(10, 1, 0, 0), at(11, 59, 0, 0)},
		{at(10, 0, 0, 0), subjects.Silver, 2, 480, at(10, 0, 0, 0), at(13, 59, 0, 0)},
		{at(10, 0, 0, 0), subjects.Bronze, 3, 1440, at(10, 0, 0, 0), at(17, 59, 0, 0)},
		{at(10, 0, 0, 0), subjects.Gold, 0, 0, time.Time{}, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s_%s_%d", tc.typ, tc.created.Format("15:04:05.000"), tc.agents), func(t *testing.T) {
			t.Parallel()
			c := New(tc.created)
			for i := 0; i < tc.agents; i++ {
				c.SetAgent(Agent{ID: fmt.Sprintf("a%d", i), Available: true, Since: at(8, 0, 0, 0)})
			}
			got := claimAll(t, c, tc.created, tc.typ)
			if len(got) != tc.want {
				t.Fatalf("claimed %d slots, want %d", len(got), tc.want)
			}
			if tc.want == 0 {
				return
			}
			// Earliest first, ties by agent id.
			if got[0] != slot("a0", tc.first) {
				t.Errorf("first claim %v, want a0 at %v", got[0], tc.first)
			}
			for i := 1; i < len(got); i++ {
				p, q := got[i-1], got[i]
				if q.Minute.Before(p.Minute) || (q.Minute.Equal(p.Minute) && q.Agent <= p.Agent) {
					t.Fatalf("claims out of order: %v then %v", p, q)
				}
			}
			lastSlot := got[len(got)-1]
			if !lastSlot.Minute.Equal(tc.last) {
				t.Errorf("last claim at %v, want %v", lastSlot.Minute, tc.last)
			}
			sla, _ := subjects.SLA(tc.typ)
			if lastSlot.Minute.Add(time.Minute).After(tc.created.Add(sla)) {
				t.Errorf("last slot ends after the deadline")
			}
		})
	}
}

func TestGoldThenSilver(t *testing.T) {
	t.Parallel()
	// docs/api.md's example: one agent, ~120 GOLD, then GOLD refused, ~120 SILVER.
	c := New(t0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})
	if n := len(claimAll(t, c, t0, subjects.Gold)); n != 120 {
		t.Fatalf("gold: %d", n)
	}
	if n := len(claimAll(t, c, t0.Add(time.Second), subjects.Gold)); n != 0 {
		t.Fatalf("gold after full: %d", n)
	}
	if n := len(claimAll(t, c, t0.Add(time.Second), subjects.Silver)); n != 120 {
		t.Fatalf("silver: %d, want 120 (12:00..13:59)", n)
	}
}

func TestAgentAvailability(t *testing.T) {
	t.Parallel()
	first, last, _ := Window(t0, subjects.Gold)

	t.Run("mid-minute", func(t *testing.T) {
		t.Parallel()
		c := New(t0)
		c.SetAgent(Agent{ID: "a1", Available: true, Since: at(10, 30, 20, 0)})
		cl, ok := c.Claim(t0, first, last)
		if !ok || cl.Slot != slot("a1", at(10, 31, 0, 0)) {
			t.Fatalf("claim %v %v, want a1 at 10:31", cl, ok)
		}
		if n := c.Free(t0, first, last); n != 88 { // 10:32 .. 11:59
			t.Fatalf("free = %d, want 88", n)
		}
	})
	t.Run("available exactly on a minute", func(t *testing.T) {
		t.Parallel()
		c := New(t0)
		c.SetAgent(Agent{ID: "a1", Available: true, Since: at(10, 30, 0, 0)})
		if cl, ok := c.Claim(t0, first, last); !ok || !cl.Minute.Equal(at(10, 30, 0, 0)) {
			t.Fatalf("claim %v %v, want 10:30", cl, ok)
		}
	})
	t.Run("available after the window", func(t *testing.T) {
		t.Parallel()
		c := New(t0)
		c.SetAgent(Agent{ID: "a1", Available: true, Since: at(11, 59, 0, 1)})
		if cl, ok := c.Claim(t0, first, last); ok {
			t.Fatalf("claimed %v", cl)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		t.Parallel()
		c := New(t0)
		c.SetAgent(Agent{ID: "a1", Available: false})
		c.SetAgent(Agent{ID: "a2", Available: true, Since: at(9, 0, 0, 0)})
		for i := 0; i < 5; i++ {
			cl, ok := c.Claim(t0, first, last)
			if !ok || cl.Agent != "a2" {
				t.Fatalf("claim %v %v, want a2", cl, ok)
			}
			c.Taken(cl, uint64(i+1), busy)
		}
		c.SetAgent(Agent{ID: "a2", Available: false})
		checkCounts(t, c)
		if cl, ok := c.Claim(t0, first, last); ok {
			t.Fatalf("claimed %v with no agent available", cl)
		}
		// Back: its earlier reservations still count, new slots from the
		// next whole minute after Since.
		c.SetAgent(Agent{ID: "a2", Available: true, Since: at(10, 2, 0, 500)})
		checkCounts(t, c)
		cl, ok := c.Claim(t0, first, last)
		if !ok || cl.Slot != slot("a2", at(10, 5, 0, 0)) {
			t.Fatalf("claim %v %v, want a2 at 10:05", cl, ok)
		}
	})
	t.Run("LoadAgents drops missing agents", func(t *testing.T) {
		t.Parallel()
		c := New(t0)
		c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})
		c.SetAgent(Agent{ID: "a2", Available: true, Since: at(9, 0, 0, 0)})
		c.LoadAgents([]Agent{{ID: "a2", Available: true, Since: at(9, 0, 0, 0)}})
		checkCounts(t, c)
		if cl, ok := c.Claim(t0, first, last); !ok || cl.Agent != "a2" {
			t.Fatalf("claim %v %v, want a2", cl, ok)
		}
		c.LoadAgents(nil)
		if cl, ok := c.Claim(t0, first, last); ok {
			t.Fatalf("claimed %v after every agent left", cl)
		}
	})
}

func TestEventsAndRevisions(t *testing.T) {
	t.Parallel()
	first, last, _ := Window(t0, subjects.Gold)
	c := New(t0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})
	s0 := slot("a1", t0)

	// A never-written minute is claimed for a create (revision 0).
	if cl, ok := c.Claim(t0, first, last); !ok || cl.Slot != s0 || cl.Rev != 0 {
		t.Fatalf("claim %+v %v, want %v at revision 0", cl, ok, s0)
	} else {
		c.Abandon(cl)
	}
	// A watch's confirmed record makes the slot busy; the next claim
	// moves on.
	c.Set(s0, 5, busy)
	if cl, _ := c.Claim(t0, first, last); !cl.Minute.Equal(at(10, 1, 0, 0)) {
		t.Fatalf("claim %v, want 10:01", cl)
	} else {
		c.Abandon(cl)
	}
	// An older release delivered late does not free it; a newer one does,
	// and the next claim replaces that revision.
	c.Set(s0, 4, free)
	if !c.Reserved(s0) {
		t.Fatal("an older release freed the slot")
	}
	c.Set(s0, 6, free)
	if c.Reserved(s0) || c.Rev(s0) != 6 {
		t.Fatalf("a newer release did not free the slot at its revision (rev %d)", c.Rev(s0))
	}
	c.Set(s0, 6, busy) // same revision: ignored
	if c.Reserved(s0) {
		t.Fatal("a record at an already seen revision applied")
	}

	// Own write: reserved at once; the watch's echo and older events
	// change nothing.
	cl, ok := c.Claim(t0, first, last)
	if !ok || cl.Slot != s0 || cl.Rev != 6 {
		t.Fatalf("claim %+v, want %v over revision 6", cl, s0)
	}
	c.Taken(cl, 9, busy)
	c.Set(s0, 9, busy)
	c.Set(s0, 7, free)
	if !c.Reserved(s0) {
		t.Fatal("own reservation lost to an old event")
	}
	// Own release at 10: free at once, a late echo of 9 is ignored.
	c.Set(s0, 10, free)
	c.Set(s0, 9, busy)
	if c.Reserved(s0) {
		t.Fatal("released slot reserved again by a stale record")
	}
	checkCounts(t, c)

	// A lost write marks the slot busy, unless the watch knows newer.
	cl, _ = c.Claim(t0, first, last)
	c.Lost(cl)
	if !c.Reserved(cl.Slot) || c.Rev(cl.Slot) != cl.Rev {
		t.Fatal("lost write did not mark the slot busy")
	}
	c.Set(cl.Slot, 11, busy)
	c.Set(cl.Slot, 12, free)
	cl2, _ := c.Claim(t0, first, last)
	if cl2.Slot != cl.Slot || cl2.Rev != 12 {
		t.Fatalf("claim %+v, want the freed %v at 12", cl2, cl.Slot)
	}
	c.Set(cl2.Slot, 13, busy)
	c.Set(cl2.Slot, 14, free) // the watch saw the holder come and go meanwhile
	c.Lost(cl2)
	if c.Reserved(cl2.Slot) {
		t.Fatal("lost write overrode newer watch knowledge")
	}
	checkCounts(t, c)
}

// TestHoldsExpire: a hold keeps its minute busy until its expiry and frees
// it then by the clock alone, at the hold's revision; a hold replaced
// since (confirmed, or a newer hold) is not freed by the old expiry.
func TestHoldsExpire(t *testing.T) {
	t.Parallel()
	first, last, _ := Window(t0, subjects.Gold)
	c := New(t0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(11, 59, 0, 0)}) // one slot
	s := slot("a1", at(11, 59, 0, 0))
	until := t0.Add(30 * time.Second)

	cl, ok := c.Claim(t0, first, last)
	if !ok || cl.Slot != s {
		t.Fatalf("claim %+v %v", cl, ok)
	}
	c.Taken(cl, 3, heldUntil(until))
	if _, ok := c.Claim(until.Add(-time.Nanosecond), first, last); ok {
		t.Fatal("claimed a hold before its expiry")
	}
	if n := c.Free(until.Add(-time.Nanosecond), first, last); n != 0 {
		t.Fatalf("free = %d before the expiry", n)
	}
	cl, ok = c.Claim(until, first, last)
	if !ok || cl.Slot != s || cl.Rev != 3 {
		t.Fatalf("claim at the expiry %+v %v, want %v over the hold's revision 3", cl, ok, s)
	}
	checkCounts(t, c)
	// A newer hold from the watch replaces it while the claim is in
	// flight: the write loses, the slot is that hold's until it expires.
	later := until.Add(30 * time.Second)
	c.Set(s, 4, heldUntil(later))
	c.Lost(cl)
	if _, ok := c.Claim(until.Add(time.Second), first, last); ok {
		t.Fatal("claimed under a newer hold")
	}
	// Confirmed before its expiry: the expiry frees nothing.
	c.Set(s, 5, busy)
	if _, ok := c.Claim(later.Add(time.Hour), first, last); ok {
		t.Fatal("a confirmed ticket freed by the expiry of the hold it replaced")
	}
	// Released, then held again, and that hold expires.
	c.Set(s, 6, free)
	c.Set(s, 7, heldUntil(later.Add(time.Minute)))
	if c.Free(later.Add(time.Minute-time.Nanosecond), first, last) != 0 || c.Free(later.Add(time.Minute), first, last) != 1 {
		t.Fatal("the second hold did not end at its own expiry")
	}
	// A snapshot with an expired hold: free at once.
	c.LoadSlots([]Entry{{Slot: s, Rev: 8, Mark: heldUntil(t0)}})
	if cl, ok := c.Claim(t0, first, last); !ok || cl.Rev != 8 {
		t.Fatalf("claim after a snapshot with an expired hold: %+v %v", cl, ok)
	}
	checkCounts(t, c)
}

func TestClaimsNotHandedOutTwice(t *testing.T) {
	t.Parallel()
	first, last, _ := Window(t0, subjects.Gold)
	c := New(t0)
	c.SetAgent(Agent{ID: "b", Available: true, Since: at(9, 0, 0, 0)})
	c.SetAgent(Agent{ID: "a", Available: true, Since: at(9, 0, 0, 0)})
	var claims []Claim
	for {
		cl, ok := c.Claim(t0, first, last)
		if !ok {
			break
		}
		claims = append(claims, cl)
	}
	if len(claims) != 240 {
		t.Fatalf("%d outstanding claims, want 240", len(claims))
	}
	if claims[0].Slot != slot("a", t0) || claims[1].Slot != slot("b", t0) {
		t.Fatalf("ties not by agent id: %v %v", claims[0].Slot, claims[1].Slot)
	}
	checkCounts(t, c)
	// A snapshot load keeps claims in flight.
	c.LoadSlots([]Entry{{Slot: slot("a", at(11, 0, 0, 0)), Rev: 3, Mark: busy}})
	if _, ok := c.Claim(t0, first, last); ok {
		t.Fatal("claim handed out while all are in flight")
	}
	c.Abandon(claims[7])
	if cl, ok := c.Claim(t0, first, last); !ok || cl.Slot != claims[7].Slot {
		t.Fatalf("abandoned claim not handed out again: %v %v", cl, ok)
	}
	checkCounts(t, c)
}

func TestLoadSlotsReplaces(t *testing.T) {
	t.Parallel()
	first, last, _ := Window(t0, subjects.Gold)
	c := New(t0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})
	c.Set(slot("a1", t0), 50, busy)
	c.Set(slot("a1", at(10, 1, 0, 0)), 60, free)
	// Rebuilt watch: a key absent from the snapshot is free and never
	// written, whatever revision was known before.
	c.LoadSlots([]Entry{{Slot: slot("a1", at(10, 1, 0, 0)), Rev: 7, Mark: busy},
		{Slot: slot("a1", at(10, 2, 0, 0)), Rev: 8, Mark: free}})
	if c.Reserved(slot("a1", t0)) || !c.Reserved(slot("a1", at(10, 1, 0, 0))) || c.Rev(slot("a1", t0)) != 0 {
		t.Fatal("snapshot not applied")
	}
	cl, _ := c.Claim(t0, first, last)
	if cl.Slot != slot("a1", t0) || cl.Rev != 0 {
		t.Fatalf("claim %+v", cl)
	}
	cl, _ = c.Claim(t0, first, last)
	if cl.Slot != slot("a1", at(10, 2, 0, 0)) || cl.Rev != 8 {
		t.Fatalf("claim %+v, want the released 10:02 at revision 8", cl)
	}
	checkCounts(t, c)
}

func TestRebase(t *testing.T) {
	t.Parallel()
	c := New(t0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})
	c.Set(slot("a1", t0), 1, busy)
	// Far outside the indexed range: ignored (a create would conflict).
	c.Set(slot("a1", t0.Add(100*time.Hour)), 2, busy)
	checkCounts(t, c)
	// A day later the range moves; old minutes are dropped.
	later := t0.Add(24 * time.Hour)
	first, last, _ := Window(later, subjects.Bronze)
	cl, ok := c.Claim(later, first, last)
	if !ok || cl.Slot != slot("a1", later) {
		t.Fatalf("claim %v %v", cl, ok)
	}
	if c.Reserved(slot("a1", t0)) {
		t.Fatal("minute of yesterday still indexed")
	}
	checkCounts(t, c)
	if n := len(claimAll(t, c, later, subjects.Bronze)); n != 479 {
		t.Fatalf("claimed %d more, want 479", n)
	}
}

// kvSlot is the model's newest record of a key.
type kvSlot struct {
	rev  uint64
	mark Mark
}

func (k kvSlot) busy(now time.Time) bool {
	return k.mark.State == Busy || (k.mark.State == Held && now.Before(k.mark.Until))
}

// TestRandomOperations drives a calendar with random claims, outcomes,
// records, hold expiries and agent changes, against a model of the KV:
// a claim is inside its window, never handed out while in flight, only
// for a minute the KV has free at that instant and over the revision the
// KV has (0: never written); and the per-minute counts agree with the
// entries.
func TestRandomOperations(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		c := New(t0)
		agents := []string{"a", "b", "c", "d"}
		inFlight := map[Slot]Claim{}
		kv := map[Slot]kvSlot{}
		rev := uint64(0)
		now := t0
		mark := func() Mark {
			if rng.IntN(3) == 0 {
				return heldUntil(now.Add(time.Duration(rng.IntN(60)) * time.Second))
			}
			return busy
		}
		for step := 0; step < 3000; step++ {
			switch op := rng.IntN(12); {
			case op < 4:
				created := t0.Add(time.Duration(rng.Int64N(int64(30 * time.Minute))))
				typ := []string{subjects.Gold, subjects.Silver, subjects.Bronze}[rng.IntN(3)]
				first, last, _ := Window(created, typ)
				cl, ok := c.Claim(now, first, last)
				if !ok {
					continue
				}
				if cl.Minute.Before(first) || cl.Minute.After(last) {
					t.Fatalf("seed %d: claim %v outside [%v, %v]", seed, cl.Slot, first, last)
				}
				if _, dup := inFlight[cl.Slot]; dup {
					t.Fatalf("seed %d: %v claimed twice", seed, cl.Slot)
				}
				if k := kv[cl.Slot]; k.busy(now) || k.rev != cl.Rev {
					t.Fatalf("seed %d: %+v claimed at %v while the KV has %+v", seed, cl, now, k)
				}
				inFlight[cl.Slot] = cl
			case op < 7 && len(inFlight) > 0:
				for s, cl := range inFlight {
					delete(inFlight, s)
					switch k := kv[s]; {
					case k.rev != cl.Rev:
						c.Lost(cl) // the revision-checked write fails
					case rng.IntN(5) == 0:
						c.Abandon(cl)
					default:
						rev++
						kv[s] = kvSlot{rev, mark()}
						c.Taken(cl, rev, kv[s].mark)
					}
					break
				}
			case op < 8 && len(kv) > 0:
				for s := range kv {
					rev++
					kv[s] = kvSlot{rev, free} // a release, by anyone
					c.Set(s, rev, free)
					break
				}
			case op < 9:
				s := slot(agents[rng.IntN(len(agents))], t0.Add(time.Duration(rng.IntN(480))*time.Minute))
				if !kv[s].busy(now) {
					rev++
					kv[s] = kvSlot{rev, mark()}
					c.Set(s, rev, kv[s].mark) // another responder's write
				}
			case op < 11:
				now = now.Add(time.Duration(rng.IntN(10)) * time.Second)
			default:
				c.SetAgent(Agent{ID: agents[rng.IntN(len(agents))], Available: rng.IntN(3) > 0,
					Since: t0.Add(time.Duration(rng.Int64N(int64(3 * time.Hour))))})
			}
			if step%10 == 0 {
				checkCounts(t, c)
			}
		}
		checkCounts(t, c)
	}
}

func FuzzCalendar(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := New(t0)
		inFlight := map[Slot]bool{}
		now := t0
		for i, op := range ops {
			s := slot(string(rune('a'+op%3)), t0.Add(time.Duration(op%16)*time.Minute))
			switch op % 7 {
			case 0:
				c.SetAgent(Agent{ID: s.Agent, Available: op%4 != 0, Since: t0.Add(time.Duration(op) * time.Second)})
			case 1, 2:
				first, last, _ := Window(t0.Add(time.Duration(op)*time.Second), subjects.Gold)
				if cl, ok := c.Claim(now, first, last); ok {
					if inFlight[cl.Slot] || cl.Minute.Before(first) || cl.Minute.After(last) {
						t.Fatalf("bad claim %v", cl.Slot)
					}
					inFlight[cl.Slot] = true
					if op%2 == 0 {
						c.Taken(cl, uint64(i+1), heldUntil(now.Add(time.Duration(op)*time.Second)))
						delete(inFlight, cl.Slot)
					}
				}
			case 3:
				c.Set(s, uint64(i+1), []Mark{busy, free, heldUntil(now.Add(time.Duration(op) * time.Second))}[op%3])
			case 4:
				now = now.Add(time.Duration(op) * time.Second)
				c.ExpireHolds(now)
			case 5:
				c.Set(s, uint64(i+1), free)
			case 6:
				c.LoadSlots(nil)
			}
			checkCounts(t, c)
		}
	})
}

// TestOffered: the bookable agent-minutes of a range are those of the
// available agents from their first minute, busy or not; Offered less
// Free is what is reserved.
func TestOffered(t *testing.T) {
	t.Parallel()
	c := New(t0)
	first, last := at(10, 0, 0, 0), at(10, 59, 0, 0)
	c.SetAgent(Agent{ID: "a1", Available: true, Since: at(9, 0, 0, 0)})    // the whole hour: 60
	c.SetAgent(Agent{ID: "a2", Available: true, Since: at(10, 30, 20, 0)}) // 10:31 .. 10:59: 29
	c.SetAgent(Agent{ID: "a3", Available: false})
	c.SetAgent(Agent{ID: "a4", Available: true, Since: at(11, 0, 0, 1)}) // after the range
	if n := c.Offered(first, last); n != 89 {
		t.Fatalf("offered %d, want 89", n)
	}
	c.Set(slot("a1", at(10, 5, 0, 0)), 1, busy)
	c.Set(slot("a2", at(10, 40, 0, 0)), 2, heldUntil(at(10, 20, 0, 0)))
	c.Set(slot("a3", at(10, 6, 0, 0)), 3, busy) // not offered: not counted
	if n := c.Offered(first, last); n != 89 {
		t.Fatalf("offered %d after reservations, want still 89", n)
	}
	if reserved := c.Offered(first, last) - c.Free(t0, first, last); reserved != 2 {
		t.Fatalf("reserved %d, want 2", reserved)
	}
	if n := c.Offered(last, first); n != 0 {
		t.Fatalf("offered %d over an empty range", n)
	}
}
