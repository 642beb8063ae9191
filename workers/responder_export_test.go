package workers

import "time"

// FreeSlots is, for tests, how many agent-minutes in [first, last] the
// responder's calendar of tenant would hand out now: a way to wait until a
// watch has delivered a change.
func (r *Responder) FreeSlots(tenant string, first, last time.Time) int {
	tc := r.calendar(tenant)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.cal.Free(first, last)
}
