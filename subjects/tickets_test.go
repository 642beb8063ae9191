package subjects

import (
	"encoding/json"
	"errors"
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
	if SlotBucket(3) != "TMS_RESERVATIONS_3" || AllocatorConsumer(3) != "allocators-3" {
		t.Errorf("SlotBucket(3) = %q, AllocatorConsumer(3) = %q", SlotBucket(3), AllocatorConsumer(3))
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

// TestTicketEventCheck: the allocators' rules for an event (what a slot
// record stands for) before it is written: everything no worker could
// write is refused, as ErrInvalidEvent; a well-formed create or cancel
// passes. (The record's own decoding is DecodeSlotRecord's test.)
func TestTicketEventCheck(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		change func(*TicketEvent)
		ok     bool
	}{
		{"created", func(*TicketEvent) {}, true},
		{"cancelled", func(ev *TicketEvent) { ev.Event, ev.CancelledAt = TicketCancelled, &eventT0 }, true},
		{"cancelled without cancelled_at", func(ev *TicketEvent) { ev.Event = TicketCancelled }, true},
		{"slot in another zone", func(ev *TicketEvent) { ev.SlotTime = ev.SlotTime.In(time.FixedZone("x", 5*3600+1800)) }, true},
		{"last minute of the window", func(ev *TicketEvent) { ev.SlotTime = eventT0.Add(2*time.Hour - 90*time.Second) }, true},
		{"other tenant", func(ev *TicketEvent) { ev.Tenant = "c2" }, false},
		{"other ticket", func(ev *TicketEvent) { ev.Ticket = "t2" }, false},
		{"unknown event", func(ev *TicketEvent) { ev.Event = "moved" }, false},
		{"no event", func(ev *TicketEvent) { ev.Event = "" }, false},
		{"unknown type", func(ev *TicketEvent) { ev.Type = "gold" }, false},
		{"bad agent", func(ev *TicketEvent) { ev.Agent = "a.b" }, false},
		{"no agent", func(ev *TicketEvent) { ev.Agent = "" }, false},
		{"no created_at", func(ev *TicketEvent) { ev.CreatedAt = time.Time{} }, false},
		{"slot inside a minute", func(ev *TicketEvent) { ev.SlotTime = ev.SlotTime.Add(time.Second) }, false},
		{"no slot", func(ev *TicketEvent) { ev.SlotTime = time.Time{} }, false},
		{"deadline not created_at + SLA", func(ev *TicketEvent) { ev.Deadline = ev.Deadline.Add(time.Minute) }, false},
		{"no deadline", func(ev *TicketEvent) { ev.Deadline = time.Time{} }, false},
		{"slot before created_at", func(ev *TicketEvent) { ev.SlotTime = eventT0.Truncate(time.Minute) }, false},
		{"slot past the deadline", func(ev *TicketEvent) { ev.SlotTime = eventT0.Add(2*time.Hour - 30*time.Second) }, false},
		{"created with cancelled_at", func(ev *TicketEvent) { ev.CancelledAt = &eventT0 }, false},
	} {
		ev := goodEvent()
		c.change(&ev)
		err := ev.Check("c1", "t1")
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case !c.ok && !errors.Is(err, ErrInvalidEvent):
			t.Errorf("%s: %v, want ErrInvalidEvent", c.name, err)
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

// FuzzDecodeSlotRecord: whatever the key and body, the one validator of
// slot records never panics and refuses only with ErrInvalidSlot; what
// CheckWritable accepts, CheckNames accepts too; a ticket's record it
// accepts names its key's slot, and its event holds every invariant the
// allocator relies on and passes CheckRow; its re-encoding is accepted
// again.
func FuzzDecodeSlotRecord(f *testing.F) {
	minute := time.Date(2030, 5, 6, 12, 31, 0, 0, time.UTC)
	created := minute.Add(-90 * time.Second)
	id, err := NewSlotTicketID("a1", minute, NewTicketNonce())
	if err != nil {
		f.Fatal(err)
	}
	key := SlotKey("c1", "a1", minute)
	ev := TicketEvent{Event: TicketCreated, Tenant: "c1", Ticket: id, Type: Gold, Agent: "a1", SlotTime: minute,
		CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
	good, _ := json.Marshal(ConfirmedRecord(ev, 0))
	released, _ := json.Marshal(ReleasedRecord(ev, created.Add(time.Second), 7))
	expiry := created.Add(30 * time.Second)
	held, _ := json.Marshal(SlotRecord{State: SlotHeld, Tenant: "c1", Agent: "a1", SlotTime: minute, Type: Gold,
		CreatedAt: created, Nonce: NewHoldNonce(), HoldExpiresAt: &expiry})
	f.Add(key, good)
	f.Add(key, released)
	f.Add(key, held)
	f.Add(key, []byte(`{"state":"released"}`))
	f.Add("c1.a1.x", []byte(`{}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		for _, check := range []TicketEventCheck{CheckWritable, CheckNames} {
			if _, err := DecodeSlotRecord(key, data, check); err != nil && !errors.Is(err, ErrInvalidSlot) {
				t.Fatalf("check %d refused with %v, not ErrInvalidSlot", check, err)
			}
		}
		rec, err := DecodeSlotRecord(key, data, CheckWritable)
		if err != nil {
			return
		}
		if _, err := DecodeSlotRecord(key, data, CheckNames); err != nil {
			t.Fatalf("CheckWritable accepted what CheckNames refuses: %v", err)
		}
		tenant, agent, minute, err := ParseSlotKey(key)
		if err != nil {
			t.Fatalf("accepted a record under key %q: %v", key, err)
		}
		if rec.HasTicket() {
			ev := rec.Event()
			ta, tm, _, err := ParseTicketID(ev.Ticket)
			sla, ok := SLA(ev.Type)
			switch {
			case err != nil || ta != agent || !tm.Equal(minute):
				t.Fatalf("accepted ticket %q under key %q", ev.Ticket, key)
			case ev.Tenant != tenant || ev.Agent != agent || !ev.SlotTime.Equal(minute):
				t.Fatalf("accepted %s/%s/%v under key %q", ev.Tenant, ev.Agent, ev.SlotTime, key)
			case ev.CheckRow() != nil:
				t.Fatalf("CheckWritable accepted what CheckRow refuses: %v", ev.CheckRow())
			case !ok || ev.CreatedAt.IsZero() || !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
				t.Fatalf("accepted type %q created_at %v deadline %v", ev.Type, ev.CreatedAt, ev.Deadline)
			case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
				t.Fatalf("accepted slot_time %v outside [%v, %v - 1m]", ev.SlotTime, ev.CreatedAt, ev.Deadline)
			case rec.State == SlotReleased && rec.CancelledAt == nil:
				t.Fatal("accepted a released ticket without cancelled_at")
			}
		}
		again, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSlotRecord(key, again, CheckWritable); err != nil {
			t.Fatalf("accepted %q, refused its re-encoding %q: %v", data, again, err)
		}
	})
}
