package calendar

import (
	"math/rand/v2"
	"testing"
	"time"

	"tms/subjects"
)

func at(h, m, s, ns int) time.Time { return time.Date(2030, 3, 4, h, m, s, ns, time.UTC) }

func TestWindow(t *testing.T) {
	t.Parallel()
	ms := int(time.Millisecond)
	cases := []struct {
		name        string
		created     time.Time
		typ         string
		first, last time.Time
		slots       int
	}{
		{"gold at :00.000", at(10, 0, 0, 0), subjects.Gold, at(10, 0, 0, 0), at(11, 59, 0, 0), 120},
		{"gold at :00.001", at(10, 0, 0, ms), subjects.Gold, at(10, 1, 0, 0), at(11, 59, 0, 0), 119},
		{"gold at :59.999", at(10, 0, 59, 999*ms), subjects.Gold, at(10, 1, 0, 0), at(11, 59, 0, 0), 119},
		{"gold one ns in", at(10, 0, 0, 1), subjects.Gold, at(10, 1, 0, 0), at(11, 59, 0, 0), 119},
		{"silver at :00.000", at(10, 0, 0, 0), subjects.Silver, at(10, 0, 0, 0), at(13, 59, 0, 0), 240},
		{"silver at :30.5", at(10, 0, 30, 500*ms), subjects.Silver, at(10, 1, 0, 0), at(13, 59, 0, 0), 239},
		{"bronze at :00.000", at(10, 0, 0, 0), subjects.Bronze, at(10, 0, 0, 0), at(17, 59, 0, 0), 480},
		{"bronze at :59.999", at(10, 0, 59, 999*ms), subjects.Bronze, at(10, 1, 0, 0), at(17, 59, 0, 0), 479},
		{"gold across midnight", time.Date(2030, 12, 31, 23, 30, 0, 0, time.UTC), subjects.Gold,
			time.Date(2030, 12, 31, 23, 30, 0, 0, time.UTC), time.Date(2031, 1, 1, 1, 29, 0, 0, time.UTC), 120},
		{"non-UTC zone", time.Date(2030, 3, 4, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600)), subjects.Gold,
			at(10, 0, 0, 0), at(11, 59, 0, 0), 120},
	}
	for _, c := range cases {
		first, last, ok := Window(c.created, c.typ)
		if !ok || !first.Equal(c.first) || !last.Equal(c.last) || first.Location() != time.UTC || last.Location() != time.UTC {
			t.Errorf("%s: Window = %v %v %v, want %v %v", c.name, first, last, ok, c.first, c.last)
			continue
		}
		if n := int(last.Sub(first)/time.Minute) + 1; n != c.slots {
			t.Errorf("%s: %d slots, want %d", c.name, n, c.slots)
		}
		sla, _ := subjects.SLA(c.typ)
		if end := last.Add(time.Minute); end.After(c.created.Add(sla)) {
			t.Errorf("%s: last slot ends %v after the deadline %v", c.name, end, c.created.Add(sla))
		}
	}
	// On a whole minute, the last slot ends exactly on the deadline.
	_, last, _ := Window(at(10, 0, 0, 0), subjects.Gold)
	if !last.Add(time.Minute).Equal(at(12, 0, 0, 0)) {
		t.Errorf("last slot ends %v, want exactly the deadline", last.Add(time.Minute))
	}
	for _, typ := range []string{"", "gold", "PLATINUM", "GOLD "} {
		if _, _, ok := Window(at(10, 0, 0, 0), typ); ok {
			t.Errorf("Window accepted type %q", typ)
		}
	}
}

// TestWindowMatchesRule checks Window against the rule itself, minute by
// minute around the window, for random instants and every type.
func TestWindowMatchesRule(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		c := at(0, 0, 0, 0).Add(time.Duration(rng.Int64N(int64(48 * time.Hour))))
		if i%4 == 0 {
			c = c.Truncate(time.Minute) // whole minutes are the interesting edge
		}
		for _, typ := range []string{subjects.Gold, subjects.Silver, subjects.Bronze} {
			sla, _ := subjects.SLA(typ)
			first, last, ok := Window(c, typ)
			if !ok {
				t.Fatalf("Window(%v, %s) not ok", c, typ)
			}
			for s := c.Truncate(time.Minute).Add(-2 * time.Minute); !s.After(c.Add(sla + 2*time.Minute)); s = s.Add(time.Minute) {
				allowed := !s.Before(c) && !s.Add(time.Minute).After(c.Add(sla))
				inside := !s.Before(first) && !s.After(last)
				if allowed != inside {
					t.Fatalf("created %v %s: slot %v allowed=%v but inside window [%v, %v]=%v",
						c.Format(time.RFC3339Nano), typ, s, allowed, first, last, inside)
				}
			}
		}
	}
}

func TestAgentStart(t *testing.T) {
	t.Parallel()
	cases := []struct{ since, want time.Time }{
		{at(9, 0, 0, 0), at(9, 0, 0, 0)},
		{at(9, 0, 0, 1), at(9, 1, 0, 0)},
		{at(9, 0, 30, 0), at(9, 1, 0, 0)},
		{at(9, 0, 59, 999999999), at(9, 1, 0, 0)},
		{at(23, 59, 1, 0), time.Date(2030, 3, 5, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		if got := AgentStart(c.since); !got.Equal(c.want) {
			t.Errorf("AgentStart(%v) = %v, want %v", c.since, got, c.want)
		}
	}
}

func TestMinuteIndexBeforeEpoch(t *testing.T) {
	t.Parallel()
	for _, tm := range []time.Time{time.Unix(-61, 0), time.Unix(-60, 0), time.Unix(-1, 0), time.Unix(0, 0), time.Unix(59, 0)} {
		if got, want := minuteTime(minuteIndex(tm)), tm.Truncate(time.Minute).UTC(); !got.Equal(want) {
			t.Errorf("minuteTime(minuteIndex(%v)) = %v, want %v", tm, got, want)
		}
	}
}
