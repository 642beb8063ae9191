// Package calendar is the pure slot arithmetic of ticket admission: the SLA
// window of a ticket, the minute an agent starts contributing, and a
// per-tenant index of agent-minutes that places a ticket so that the
// calendar admits as many tickets as any schedule could (issue 10).
//
// Calendar.Place gives a new ticket the earliest free agent-minute of its
// window when there is one. Otherwise it moves accepted tickets, each
// inside its own window, to make room, with the fewest moves: a shortest
// augmenting path, found by layers over per-minute aggregates and
// cross-checked by feasible.Plan, the feasibility model of the minutes at
// or after the frozen horizon (ceilMinute(now) plus SetFrozen's minutes),
// kept in step with every record the calendar learns. Tickets before the
// horizon never move, and none moves into it. Capacity answers the same
// question without claiming anything; Stranded and Rescue re-plan the
// tickets of an agent that went away.
//
// The calendar knows a ticket's window by its last minute (Mark.Last);
// holds, claims in flight and records it cannot read are fixed: they take
// an agent-minute and never move.
//
// Nothing here does I/O or reads a clock. The ETA responder feeds a
// Calendar from KV watches and its own writes; the revision-checked KV
// write is the truth, the calendar only says which keys are worth trying:
// a placement and its moves are one batch of such writes.
package calendar

import (
	"time"

	"tms/subjects"
)

// Window returns the first and last slot minutes a ticket of ticketType
// created at instant created may take (docs/api.md): slot t is allowed iff
// t >= created and t+1m <= created+SLA. Both are whole UTC minutes, and
// the last slot ends at or before the deadline. ok is false for an unknown
// type.
func Window(created time.Time, ticketType string) (first, last time.Time, ok bool) {
	sla, ok := subjects.SLA(ticketType)
	if !ok {
		return time.Time{}, time.Time{}, false
	}
	created = created.UTC()
	first = ceilMinute(created)
	last = created.Add(sla - time.Minute).Truncate(time.Minute)
	if last.Before(first) {
		return time.Time{}, time.Time{}, false
	}
	return first, last, true
}

// AgentStart is the first slot minute of an agent that became available
// at since: the first whole minute at or after it.
func AgentStart(since time.Time) time.Time { return ceilMinute(since.UTC()) }

// ceilMinute rounds t up to a whole minute (t itself if already whole).
// Truncate works on absolute time, so it is exact for UTC minutes.
func ceilMinute(t time.Time) time.Time {
	f := t.Truncate(time.Minute)
	if f.Equal(t) {
		return f
	}
	return f.Add(time.Minute)
}

// minuteIndex is a whole minute as minutes since the Unix epoch; times
// inside a minute are floored.
func minuteIndex(t time.Time) int64 {
	s := t.Unix()
	if s < 0 && s%60 != 0 {
		return s/60 - 1
	}
	return s / 60
}

func minuteTime(m int64) time.Time { return time.Unix(m*60, 0).UTC() }
