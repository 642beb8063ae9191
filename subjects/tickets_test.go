package subjects

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSLA(t *testing.T) {
	t.Parallel()
	want := map[string]time.Duration{Gold: 2 * time.Hour, Silver: 4 * time.Hour, Bronze: 8 * time.Hour}
	for typ, d := range want {
		if got, ok := SLA(typ); !ok || got != d {
			t.Errorf("SLA(%s) = %v, %v; want %v", typ, got, ok, d)
		}
		if d > LongestSLA {
			t.Errorf("%s is longer than LongestSLA", typ)
		}
	}
	for _, typ := range []string{"", "gold", "Gold", "PLATINUM", "GOLD "} {
		if _, ok := SLA(typ); ok {
			t.Errorf("SLA(%q) accepted", typ)
		}
	}
}

func TestSubjectsRoundTrip(t *testing.T) {
	t.Parallel()
	if s := TicketSubject("c1", "t2"); s != "tms.tickets.c1.t2" {
		t.Errorf("TicketSubject = %q", s)
	}
	if tenant, ticket, err := ParseTicketSubject("tms.tickets.c1.t2"); err != nil || tenant != "c1" || ticket != "t2" {
		t.Errorf("ParseTicketSubject = %q %q %v", tenant, ticket, err)
	}
	for _, bad := range []string{"tms.tickets.c1", "tms.tickets.c1.t2.x", "tms.tickets..t2", "tms.eta.c1", "tms.tickets.C1.t2"} {
		if _, _, err := ParseTicketSubject(bad); err == nil {
			t.Errorf("ParseTicketSubject(%q) accepted", bad)
		}
	}
	if tenant, err := ParseETA(ETA("c1")); err != nil || tenant != "c1" {
		t.Errorf("ParseETA = %q %v", tenant, err)
	}
	for _, bad := range []string{"tms.eta.", "tms.eta.c1.x", "tms.eta.*", "tms.api.c1"} {
		if _, err := ParseETA(bad); err == nil {
			t.Errorf("ParseETA(%q) accepted", bad)
		}
	}
	if tenant, op, err := ParseAPI(API("c1", OpCreateTicket)); err != nil || tenant != "c1" || op != OpCreateTicket {
		t.Errorf("ParseAPI = %q %q %v", tenant, op, err)
	}
	for _, bad := range []string{"tms.api.c1", "tms.api.c1.create_ticket.x", "tms.api.*.create_ticket", "tms.apix.c1.y"} {
		if _, _, err := ParseAPI(bad); err == nil {
			t.Errorf("ParseAPI(%q) accepted", bad)
		}
	}
	if s := SlotShard("c1", 4); s < 0 || s >= 4 || SlotShard("c1", 4) != s || SlotShard("c1", 1) != 0 {
		t.Error("SlotShard is not stable")
	}
	if SlotBucket(3) != "TMS_RESERVATIONS_3" {
		t.Errorf("SlotBucket(3) = %q", SlotBucket(3))
	}
}

// eventT0 is the created_at of the events the validator tests build.
var eventT0 = time.Date(2030, 5, 6, 10, 0, 30, 0, time.UTC)

// goodEvent is a created event that every check accepts, on
// tms.tickets.c1.t1.
func goodEvent() TicketEvent {
	return TicketEvent{Event: TicketCreated, Tenant: "c1", Ticket: "t1", Type: Gold, Agent: "a1",
		SlotTime: eventT0.Truncate(time.Minute).Add(time.Minute), CreatedAt: eventT0, Deadline: eventT0.Add(2 * time.Hour)}
}

func eventJSON(t *testing.T, ev TicketEvent) string {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDecodeTicketEvent: the one validator gives the allocator
// (CheckWritable) and the readers of a ticket's latest event (CheckNames)
// each the answer it gave when each decoded for itself: the writer
// refuses everything no worker could write, the readers only an event
// that is not the subject's ticket's; every refusal is ErrInvalidEvent.
func TestDecodeTicketEvent(t *testing.T) {
	t.Parallel()
	const subject = "tms.tickets.c1.t1"
	with := func(change func(*TicketEvent)) string {
		ev := goodEvent()
		change(&ev)
		return eventJSON(t, ev)
	}
	good := eventJSON(t, goodEvent())
	for _, c := range []struct {
		name               string
		subject, data      string
		writable, readable bool
	}{
		{"created", subject, good, true, true},
		{"cancelled", subject, with(func(ev *TicketEvent) { ev.Event, ev.CancelledAt = TicketCancelled, &eventT0 }), true, true},
		{"cancelled without cancelled_at", subject, with(func(ev *TicketEvent) { ev.Event = TicketCancelled }), true, true},
		{"slot in another zone", subject, with(func(ev *TicketEvent) {
			ev.SlotTime = ev.SlotTime.In(time.FixedZone("x", 5*3600+1800))
		}), true, true},
		{"last minute of the window", subject, with(func(ev *TicketEvent) { ev.SlotTime = eventT0.Add(2*time.Hour - 90*time.Second) }), true, true},
		{"trailing space", subject, good + " \n", true, true},
		{"not a ticket subject", "tms.tickets.c1", good, false, false},
		{"invalid subject token", "tms.tickets.c1.T1", good, false, false},
		{"other tenant", "tms.tickets.c2.t1", good, false, false},
		{"other ticket", "tms.tickets.c1.t2", good, false, false},
		{"not json", subject, "{", false, false},
		{"not an object", subject, "[]", false, false},
		{"data after the object", subject, good + "{}", false, false},
		{"unknown member", subject, strings.Replace(good, `{`, `{"extra":1,`, 1), false, true},
		{"too large", subject, strings.Repeat(" ", MaxTicketEventBytes) + good, false, true},
		{"unknown event", subject, with(func(ev *TicketEvent) { ev.Event = "moved" }), false, true},
		{"no event", subject, with(func(ev *TicketEvent) { ev.Event = "" }), false, true},
		{"unknown type", subject, with(func(ev *TicketEvent) { ev.Type = "gold" }), false, true},
		{"bad agent", subject, with(func(ev *TicketEvent) { ev.Agent = "a.b" }), false, true},
		{"no agent", subject, with(func(ev *TicketEvent) { ev.Agent = "" }), false, true},
		{"no created_at", subject, with(func(ev *TicketEvent) { ev.CreatedAt = time.Time{} }), false, true},
		{"slot inside a minute", subject, with(func(ev *TicketEvent) { ev.SlotTime = ev.SlotTime.Add(time.Second) }), false, true},
		{"no slot", subject, with(func(ev *TicketEvent) { ev.SlotTime = time.Time{} }), false, true},
		{"deadline not created_at + SLA", subject, with(func(ev *TicketEvent) { ev.Deadline = ev.Deadline.Add(time.Minute) }), false, true},
		{"no deadline", subject, with(func(ev *TicketEvent) { ev.Deadline = time.Time{} }), false, true},
		{"slot before created_at", subject, with(func(ev *TicketEvent) { ev.SlotTime = eventT0.Truncate(time.Minute) }), false, true},
		{"slot past the deadline", subject, with(func(ev *TicketEvent) { ev.SlotTime = eventT0.Add(2*time.Hour - 30*time.Second) }), false, true},
		{"created with cancelled_at", subject, with(func(ev *TicketEvent) { ev.CancelledAt = &eventT0 }), false, true},
	} {
		for _, check := range []struct {
			name   string
			check  TicketEventCheck
			accept bool
		}{{"CheckWritable", CheckWritable, c.writable}, {"CheckNames", CheckNames, c.readable}} {
			ev, err := DecodeTicketEvent(c.subject, []byte(c.data), check.check)
			switch {
			case check.accept && err != nil:
				t.Errorf("%s, %s: refused: %v", c.name, check.name, err)
			case !check.accept && !errors.Is(err, ErrInvalidEvent):
				t.Errorf("%s, %s: %v, want ErrInvalidEvent", c.name, check.name, err)
			case check.accept && (ev.Tenant != "c1" || ev.Ticket != "t1"):
				t.Errorf("%s, %s: accepted %+v", c.name, check.name, ev)
			}
		}
	}
}

// TestTicketEventCheckRow: the database's own check refuses what no row
// may hold and nothing else: it neither knows the subject nor requires
// the event to hold together (the allocator's Check has).
func TestTicketEventCheckRow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		change func(*TicketEvent)
		ok     bool
	}{
		{"good", func(*TicketEvent) {}, true},
		{"no event", func(ev *TicketEvent) { ev.Event = "" }, true},
		{"other deadline", func(ev *TicketEvent) { ev.Deadline = ev.Deadline.Add(time.Hour) }, true},
		{"slot outside the window", func(ev *TicketEvent) { ev.SlotTime = ev.SlotTime.Add(-time.Hour) }, true},
		{"bad ticket", func(ev *TicketEvent) { ev.Ticket = "T1" }, false},
		{"no ticket", func(ev *TicketEvent) { ev.Ticket = "" }, false},
		{"bad agent", func(ev *TicketEvent) { ev.Agent = "a*" }, false},
		{"slot inside a minute", func(ev *TicketEvent) { ev.SlotTime = ev.SlotTime.Add(time.Millisecond) }, false},
		{"no slot", func(ev *TicketEvent) { ev.SlotTime = time.Time{} }, false},
		{"no created_at", func(ev *TicketEvent) { ev.CreatedAt = time.Time{} }, false},
		{"no deadline", func(ev *TicketEvent) { ev.Deadline = time.Time{} }, false},
		{"bad type", func(ev *TicketEvent) { ev.Type = "PLATINUM" }, false},
	} {
		ev := goodEvent()
		c.change(&ev)
		err := ev.CheckRow()
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidEvent)) {
			t.Errorf("%s: CheckRow = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// FuzzDecodeTicketEvent: whatever the subject and body, the validator
// never panics and refuses only with ErrInvalidEvent; what CheckWritable
// accepts, CheckNames and CheckRow accept too, it holds every invariant
// the allocator relies on, and its re-encoding is accepted again.
func FuzzDecodeTicketEvent(f *testing.F) {
	good, _ := json.Marshal(goodEvent())
	f.Add("tms.tickets.c1.t1", good)
	f.Add("tms.tickets.c1.t1", []byte(`{"event":"cancelled","tenant":"c1","ticket":"t1","type":"BRONZE",`+
		`"agent":"a","slot_time":"2030-05-06T18:00:00+05:30","created_at":"2030-05-06T12:29:59.999999999Z",`+
		`"deadline":"2030-05-06T20:29:59.999999999Z"}`))
	f.Add("tms.tickets.c1.t1", []byte(`{"Event":"created","EVENT":"cancelled","tenant":"c1","ticket":"t1"}`))
	f.Add("tms.tickets.x.y.z", []byte(`{}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		for _, check := range []TicketEventCheck{CheckWritable, CheckNames} {
			if _, err := DecodeTicketEvent(subject, data, check); err != nil && !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("check %d refused with %v, not ErrInvalidEvent", check, err)
			}
		}
		ev, err := DecodeTicketEvent(subject, data, CheckWritable)
		if err != nil {
			return
		}
		tenant, ticket, err := ParseTicketSubject(subject)
		if err != nil {
			t.Fatalf("accepted an event on %q: %v", subject, err)
		}
		if _, err := DecodeTicketEvent(subject, data, CheckNames); err != nil {
			t.Fatalf("CheckWritable accepted what CheckNames refuses: %v", err)
		}
		if err := ev.CheckRow(); err != nil {
			t.Fatalf("CheckWritable accepted what CheckRow refuses: %v", err)
		}
		sla, ok := SLA(ev.Type)
		switch {
		case ev.Event != TicketCreated && ev.Event != TicketCancelled:
			t.Fatalf("accepted event %q", ev.Event)
		case ev.Tenant != tenant || ev.Ticket != ticket:
			t.Fatalf("accepted tenant %q ticket %q on %s", ev.Tenant, ev.Ticket, subject)
		case !ok || ValidID(ev.Agent) != nil:
			t.Fatalf("accepted type %q agent %q", ev.Type, ev.Agent)
		case ev.CreatedAt.IsZero() || !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
			t.Fatalf("accepted created_at %v deadline %v for %s", ev.CreatedAt, ev.Deadline, ev.Type)
		case !ev.SlotTime.UTC().Truncate(time.Minute).Equal(ev.SlotTime):
			t.Fatalf("accepted slot_time %v", ev.SlotTime)
		case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
			t.Fatalf("accepted slot_time %v outside [%v, %v - 1m]", ev.SlotTime, ev.CreatedAt, ev.Deadline)
		case ev.Event == TicketCreated && ev.CancelledAt != nil:
			t.Fatal("accepted a created event with cancelled_at")
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeTicketEvent(subject, again, CheckWritable); err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %q: %v", data, again, err)
		}
	})
}
