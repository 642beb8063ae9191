package workers

import (
	"time"

	"tms/workers/calendar"
)

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

// SlotRev is, for tests, the newest revision of a slot key the
// responder's calendar of tenant knows (0: none).
func (r *Responder) SlotRev(tenant, agent string, minute time.Time) uint64 {
	tc := r.calendar(tenant)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.cal.Rev(calendar.Slot{Agent: agent, Minute: minute})
}
