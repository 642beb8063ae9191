package subjects

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEventSubjects(t *testing.T) {
	t.Parallel()
	if s := EventSubject("c1", EventAccepted); s != "tms.events.c1.accepted" {
		t.Errorf("EventSubject = %q", s)
	}
	if s := TenantEvents("c1"); s != "tms.events.c1.*" {
		t.Errorf("TenantEvents = %q", s)
	}
	if s := TenantEventsExport("c1"); s != "tms.events.c1.>" {
		t.Errorf("TenantEventsExport = %q", s)
	}
	for _, kind := range EventKinds {
		tenant, k, err := ParseEventSubject(EventSubject("c1", kind))
		if err != nil || tenant != "c1" || k != kind {
			t.Errorf("ParseEventSubject(%s) = %q %q %v", kind, tenant, k, err)
		}
	}
	for _, bad := range []string{"", "tms.events.", "tms.events.c1", "tms.events.c1.", "tms.events.c1.created",
		"tms.events.C1.accepted", "tms.events.*.accepted", "tms.events.c1.accepted.x", "tms.api.c1.accepted",
		"tms.events..accepted"} {
		if _, _, err := ParseEventSubject(bad); !errors.Is(err, ErrInvalidEventBody) {
			t.Errorf("ParseEventSubject(%q) = %v, want ErrInvalidEventBody", bad, err)
		}
	}
	for _, bad := range []string{"", "a.b", "*", ">", "A"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("TenantEvents(%q) did not panic", bad)
				}
			}()
			TenantEvents(bad)
		}()
	}
}

// eventBodies are one valid body of each kind, for tenant c1.
func eventBodies() map[string]any {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	life := func(kind string) LifecycleEvent {
		return LifecycleEvent{Event: kind, Tenant: "c1", Ticket: "t1", Type: "GOLD", Agent: "a1",
			SlotTime: at, Deadline: at.Add(time.Hour), CreatedAt: at.Add(-time.Minute)}
	}
	return map[string]any{
		EventAccepted:  AcceptedEvent{life(EventAccepted)},
		EventAllocated: AllocatedEvent{life(EventAllocated)},
		EventCancelled: CancelledEvent{LifecycleEvent: life(EventCancelled), CancelledAt: at.Add(-30 * time.Second)},
		EventMoved: MoveEvent{Event: EventMoved, Tenant: "c1", Ticket: "t1", Type: "SILVER", Agent: "a2", SlotTime: at,
			FromAgent: "a1", FromSlotTime: at.Add(time.Minute), Deadline: at.Add(time.Hour), Moves: 1},
		EventAtRisk: AtRiskEvent{Event: EventAtRisk, Tenant: "c1", AtRiskTicket: AtRiskTicket{Ticket: "t1", Type: "BRONZE",
			Agent: "a1", SlotTime: at, Deadline: at.Add(time.Hour)}, At: at},
	}
}

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	for kind, want := range eventBodies() {
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEvent(EventSubject("c1", kind), data)
		if err != nil {
			t.Errorf("%s: %v", kind, err)
			continue
		}
		if got != want {
			t.Errorf("%s: decoded %#v, want %#v", kind, got, want)
		}
		// Another tenant's subject, another kind's subject: refused.
		if _, err := DecodeEvent(EventSubject("c2", kind), data); !errors.Is(err, ErrInvalidEventBody) {
			t.Errorf("%s on c2's subject: %v", kind, err)
		}
		other := EventAccepted
		if kind == EventAccepted {
			other = EventAllocated
		}
		if _, err := DecodeEvent(EventSubject("c1", other), data); !errors.Is(err, ErrInvalidEventBody) {
			t.Errorf("%s on a %s subject: %v", kind, other, err)
		}
	}
}

func TestDecodeEventRefusesBadBodies(t *testing.T) {
	t.Parallel()
	accepted, _ := json.Marshal(eventBodies()[EventAccepted])
	edit := func(kind string, f func(m map[string]any)) []byte {
		data, _ := json.Marshal(eventBodies()[kind])
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	cases := []struct {
		name, kind string
		data       []byte
	}{
		{"empty", EventAccepted, nil},
		{"not json", EventAccepted, []byte("accepted")},
		{"an array", EventAccepted, []byte("[]")},
		{"trailing data", EventAccepted, append(append([]byte{}, accepted...), []byte(" {}")...)},
		{"too large", EventAccepted, append(append([]byte{}, accepted[:len(accepted)-1]...),
			[]byte(`,"x":"`+strings.Repeat("x", MaxEventBytes)+`"}`)...)},
		{"unknown member", EventAccepted, edit(EventAccepted, func(m map[string]any) { m["extra"] = 1 })},
		{"no event", EventAccepted, edit(EventAccepted, func(m map[string]any) { delete(m, "event") })},
		{"no tenant", EventAllocated, edit(EventAllocated, func(m map[string]any) { delete(m, "tenant") })},
		{"bad ticket", EventAllocated, edit(EventAllocated, func(m map[string]any) { m["ticket"] = "T.1" })},
		{"no ticket", EventCancelled, edit(EventCancelled, func(m map[string]any) { m["ticket"] = "" })},
		{"bad agent", EventCancelled, edit(EventCancelled, func(m map[string]any) { m["agent"] = "a>" })},
		{"bad type", EventAccepted, edit(EventAccepted, func(m map[string]any) { m["type"] = "PLATINUM" })},
		{"no cancelled_at", EventCancelled, edit(EventCancelled, func(m map[string]any) { delete(m, "cancelled_at") })},
		{"no slot_time", EventAllocated, edit(EventAllocated, func(m map[string]any) { delete(m, "slot_time") })},
		{"bad time", EventAllocated, edit(EventAllocated, func(m map[string]any) { m["deadline"] = "soon" })},
		{"zero moves", EventMoved, edit(EventMoved, func(m map[string]any) { m["moves"] = 0 })},
		{"bad from_agent", EventMoved, edit(EventMoved, func(m map[string]any) { m["from_agent"] = "" })},
		{"no at", EventAtRisk, edit(EventAtRisk, func(m map[string]any) { delete(m, "at") })},
	}
	for _, c := range cases {
		if _, err := DecodeEvent(EventSubject("c1", c.kind), c.data); !errors.Is(err, ErrInvalidEventBody) {
			t.Errorf("%s: DecodeEvent = %v, want ErrInvalidEventBody", c.name, err)
		}
	}
}
