package calendar

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"tms/subjects"
)

// benchCalendar is 1,000 agents and a full 8 h calendar from t0: every
// agent-minute of [t0, t0+480m) holds a confirmed ticket whose Last is
// uniform between its minute and the calendar's last minute, except, when
// room, one free slot per agent in the last minute. Frozen horizon 5.
func benchCalendar(b *testing.B, room bool) *Calendar {
	b.Helper()
	const agents, minutes = 1000, 480
	c := New(t0)
	c.SetFrozen(5)
	for i := range agents {
		c.SetAgent(Agent{ID: fmt.Sprintf("a%04d", i), Available: true, Since: t0.Add(-time.Hour)})
	}
	r := rand.New(rand.NewPCG(1, 2))
	rev := uint64(0)
	for m := range minutes {
		for i := range agents {
			if room && m == minutes-1 {
				continue
			}
			rev++
			last := t0.Add(time.Duration(m+r.IntN(minutes-m)) * time.Minute)
			c.Set(Slot{Agent: fmt.Sprintf("a%04d", i), Minute: t0.Add(time.Duration(m) * time.Minute)}, rev, Mark{State: Busy, Last: last})
		}
	}
	first, last, _ := Window(t0, subjects.Bronze)
	c.Capacity(t0, first, last) // builds the plan, as the first placement would
	return c
}

func abandon(c *Calendar, p Placement) {
	for _, cl := range p.Claims {
		c.Abandon(cl)
	}
}

// BenchmarkPlaceNoMoves: a BRONZE ticket takes a free slot (the last
// minute: the scan passes 479 full minutes); one op is the Place and the
// Abandon that gives the slot back.
func BenchmarkPlaceNoMoves(b *testing.B) {
	c := benchCalendar(b, true)
	first, last, _ := Window(t0, subjects.Bronze)
	for b.Loop() {
		p, ok := c.Place(t0, first, last)
		if !ok || p.Moves() != 0 {
			b.Fatalf("placed %v with %d moves", ok, p.Moves())
		}
		abandon(c, p)
	}
}

// BenchmarkPlaceWithMoves: a GOLD ticket finds its 2 h full, and one
// BRONZE ticket moves to the last minute to make room.
func BenchmarkPlaceWithMoves(b *testing.B) {
	c := benchCalendar(b, true)
	first, last, _ := Window(t0, subjects.Gold)
	var moves int
	for b.Loop() {
		p, ok := c.Place(t0, first, last)
		if !ok || p.Moves() == 0 {
			b.Fatalf("placed %v with %d moves", ok, p.Moves())
		}
		moves += p.Moves()
		abandon(c, p)
	}
	b.ReportMetric(float64(moves)/float64(b.N), "moves/op")
}

// BenchmarkPlaceRefused: no free slot anywhere; the plan refuses.
func BenchmarkPlaceRefused(b *testing.B) {
	c := benchCalendar(b, false)
	first, last, _ := Window(t0, subjects.Gold)
	for b.Loop() {
		if _, ok := c.Place(t0, first, last); ok {
			b.Fatal("placed on a full calendar")
		}
	}
}

// BenchmarkCapacity: how many more GOLD tickets fit, and where the first
// would go (a move).
func BenchmarkCapacity(b *testing.B) {
	c := benchCalendar(b, true)
	first, last, _ := Window(t0, subjects.Gold)
	for b.Loop() {
		if n, p := c.Capacity(t0, first, last); n != 1000 || p.Moves() != 1 {
			b.Fatalf("capacity %d, first with %d moves", n, p.Moves())
		}
	}
}

// BenchmarkPlaceWithMovesTaken: as BenchmarkPlaceWithMoves, but the batch
// succeeds (Taken for the GOLD ticket and the moved BRONZE one) and two
// records from the watch then put both back as they were: a whole write
// cycle of a placement with a move.
func BenchmarkPlaceWithMovesTaken(b *testing.B) {
	c := benchCalendar(b, true)
	first, last, _ := Window(t0, subjects.Gold)
	rev := uint64(1 << 40)
	for b.Loop() {
		p, ok := c.Place(t0, first, last)
		if !ok || p.Moves() != 1 {
			b.Fatalf("placed %v with %d moves", ok, p.Moves())
		}
		c.Taken(p.Claims[0], rev+1, Mark{State: Busy, Last: last})
		c.Taken(p.Claims[1], rev+2, Mark{State: Busy, Last: p.Lasts[1]})
		c.Set(p.Claims[0].Slot, rev+3, Mark{State: Busy, Last: p.Lasts[1]})
		c.Set(p.Claims[1].Slot, rev+4, free)
		rev += 4
	}
}

// BenchmarkStaleMinute: what a placement pays once for a minute whose
// latest movable ticket left (moved, cancelled, claimed): one look at
// every agent's slot of that minute.
func BenchmarkStaleMinute(b *testing.B) {
	c := benchCalendar(b, true)
	m := minuteIndex(t0) + 60
	for b.Loop() {
		c.stale[m-c.base] = true
		c.latestAt(m)
	}
}

// BenchmarkRescue: agent a0000 of the full calendar goes away; one op is
// the Rescue of one of its 479 stranded tickets (its move onto another
// agent, plus the moves that free a slot for it) and the Abandon.
func BenchmarkRescue(b *testing.B) {
	c := benchCalendar(b, true)
	c.SetAgent(Agent{ID: "a0000"})
	stranded := c.Stranded(t0)
	if len(stranded) != 479 { // every minute but the free last one
		b.Fatalf("%d stranded, want 479", len(stranded))
	}
	var moves, n int
	for i := 0; b.Loop(); i++ {
		s := stranded[i%len(stranded)]
		p, ok := c.Rescue(t0, s.Slot)
		if ok {
			moves += p.Moves()
			n++
			abandon(c, p)
		}
	}
	b.ReportMetric(float64(moves)/float64(max(n, 1)), "moves/rescue")
}
