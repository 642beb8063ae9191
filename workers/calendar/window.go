// Package calendar is the pure slot arithmetic of ticket admission: the SLA
// window of a ticket, the minute an agent starts contributing, and a
// per-tenant index of agent-minutes that finds the earliest free one.
//
// Nothing here does I/O or reads a clock. The ETA responder feeds a
// Calendar from KV watches and its own writes; the revision-checked KV
// write is the truth,
// the calendar only says which key is worth trying first.
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
