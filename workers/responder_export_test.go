package workers

import "time"

// FreeSlots is, for tests, how many agent-minutes in [first, last] the
// responder's calendar of tenant would hand out now: a way to wait until a
// watch has delivered a change.
func (r *Responder) FreeSlots(tenant string, first, last time.Time) int {
	tc := r.calendar(tenant)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.cal.Free(r.now(), first, last)
}

// AgentsWaiting is, for tests, how many requests wait now for the agents
// watch to reach their agents revision.
func (r *Responder) AgentsWaiting() int {
	r.agentsApplied.mu.Lock()
	defer r.agentsApplied.mu.Unlock()
	return r.agentsApplied.waiting
}
