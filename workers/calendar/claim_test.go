package calendar

import "time"

// Claim finds the earliest free agent-minute in [first, last] (whole
// minutes, inclusive) among available agents at now, ties by agent id,
// and marks it claimed. ok is false when there is none. Place without its
// moves: what the tests of the earliest-free rule and of the entries'
// bookkeeping ask for.
func (c *Calendar) Claim(now, first, last time.Time) (Claim, bool) {
	f, l, ok := c.window(first, last)
	if !ok {
		return Claim{}, false
	}
	c.sync(now)
	cl, ok := c.earliestFree(f, l)
	if ok {
		c.claim(cl.Slot)
	}
	return cl, ok
}
