package subjects

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSlotSubject(t *testing.T) {
	t.Parallel()
	m := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	want := "$KV." + SlotBucket(SlotShard("c1", 4)) + ".c1.a1.203001020304"
	if got := SlotSubject("c1", "a1", m, 4); got != want {
		t.Errorf("SlotSubject = %q, want %q", got, want)
	}
}

func TestSlotKeyRoundTrip(t *testing.T) {
	t.Parallel()
	m := time.Date(2026, 11, 26, 23, 59, 0, 0, time.UTC)
	key := SlotKey("c1", "a-2_x", m)
	if key != "c1.a-2_x.202611262359" {
		t.Fatalf("SlotKey = %q", key)
	}
	tenant, agent, minute, err := ParseSlotKey(key)
	if err != nil || tenant != "c1" || agent != "a-2_x" || !minute.Equal(m) {
		t.Fatalf("ParseSlotKey = %q %q %v %v", tenant, agent, minute, err)
	}
	for _, bad := range []string{"", "c1", "c1.a1", "c1.a1.2026112623", "c1.a1.20261126235x", "c1.a1.202611262359.x",
		"C1.a1.202611262359", "c1.a1.202613262359", ".a1.202611262359"} {
		if _, _, _, err := ParseSlotKey(bad); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("ParseSlotKey(%q) = %v, want ErrInvalidSlot", bad, err)
		}
	}
}

func TestSlotKeyRefusesPartialMinutes(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("SlotKey accepted a time inside a minute")
		}
	}()
	SlotKey("c1", "a1", time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC))
}

func TestSlotIDRoundTrip(t *testing.T) {
	t.Parallel()
	m := time.Date(2026, 11, 26, 10, 5, 0, 0, time.FixedZone("x", 3600)) // 09:05 UTC
	for _, agent := range []string{"a", "a-b-c", strings.Repeat("a", MaxIDLen)} {
		id := FormatSlotID(agent, m, "n0123456789a")
		a, minute, nonce, err := ParseSlotID(id)
		if err != nil || a != agent || !minute.Equal(m) || nonce != "n0123456789a" {
			t.Errorf("ParseSlotID(%q) = %q %v %q %v", id, a, minute, nonce, err)
		}
		if ValidID(id) != nil && len(id) <= MaxIDLen {
			t.Errorf("slot id %q is not an opaque id", id)
		}
	}
	for _, bad := range []string{"", "x", "202611260905-a-n0123456789", "202611260905a-n0123456789a",
		"202611260905-A-n0123456789a", "20261126090x-a-n0123456789a", "202611260905--n0123456789a",
		"202611260905-a.b-n0123456789a", "202611260905-a-n0123456789A"} {
		if _, _, _, err := ParseSlotID(bad); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("ParseSlotID(%q) = %v, want ErrInvalidSlot", bad, err)
		}
	}
}

func TestSlotTicketIDRoundTrip(t *testing.T) {
	t.Parallel()
	m := time.Date(2030, 5, 6, 11, 59, 0, 0, time.FixedZone("x", -7200)) // 13:59 UTC
	for _, agent := range []string{"a", "a-b-c", "a_1", strings.Repeat("a", MaxSlotAgentIDLen)} {
		nonce := NewTicketNonce()
		if err := ValidTicketNonce(nonce); err != nil {
			t.Fatalf("NewTicketNonce() = %q: %v", nonce, err)
		}
		id, err := NewSlotTicketID(agent, m, nonce)
		if err != nil {
			t.Fatalf("NewSlotTicketID(%q): %v", agent, err)
		}
		if want := "t203005061359-" + agent + "-" + nonce; id != want {
			t.Errorf("NewSlotTicketID = %q, want %q", id, want)
		}
		if err := ValidID(id); err != nil {
			t.Errorf("ticket id %q is no valid id: %v", id, err)
		}
		a, minute, n, err := ParseTicketID(id)
		if err != nil || a != agent || !minute.Equal(m) || minute.Location() != time.UTC || n != nonce {
			t.Errorf("ParseTicketID(%q) = %q %v %q %v", id, a, minute, n, err)
		}
	}
	// A nonce that holds a dash still splits at the right place: the
	// nonce has a fixed length, counted from the end.
	id, err := NewSlotTicketID("a-b", m, "c-defghijklmnopq")
	if err != nil {
		t.Fatal(err)
	}
	if a, _, n, err := ParseTicketID(id); err != nil || a != "a-b" || n != "c-defghijklmnopq" {
		t.Errorf("ParseTicketID(%q) = %q %q %v", id, a, n, err)
	}
}

func TestSlotTicketIDRefusals(t *testing.T) {
	t.Parallel()
	m := time.Date(2030, 5, 6, 10, 0, 0, 0, time.UTC)
	nonce := "abcdefghijklmnop"
	for _, bad := range []struct{ agent, nonce string }{
		{"a", ""}, {"a", "abc"}, {"a", nonce + "q"}, {"a", "ABCDEFGHIJKLMNOP"}, {"a", "abcdefghijklmn.>"},
		{"", nonce}, {"A", nonce}, {"a.b", nonce}, {strings.Repeat("a", MaxSlotAgentIDLen+1), nonce},
	} {
		if id, err := NewSlotTicketID(bad.agent, m, bad.nonce); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("NewSlotTicketID(%q, %q) = %q, %v; want ErrInvalidSlot", bad.agent, bad.nonce, id, err)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("NewSlotTicketID accepted a time inside a minute")
			}
		}()
		_, _ = NewSlotTicketID("a", m.Add(time.Second), nonce)
	}()
	good, _ := NewSlotTicketID("a1", m, nonce)
	for _, bad := range []string{
		"", "t", NewID("t", RandomIDChars), // ids of an earlier version
		"x" + good[1:], "T" + good[1:], strings.ToUpper(good),
		"t203013061000-a1-" + nonce,  // month 13
		"t20300506100x-a1-" + nonce,  // not digits
		"t2030050610000-a1-" + nonce, // 13 digits
		"t203005061000a1-" + nonce, "t203005061000-a1" + nonce, "t203005061000--" + nonce,
		"t203005061000-a.1-" + nonce, "t203005061000-a1-" + nonce[1:], good + ".>",
		"t203005061000-" + strings.Repeat("a", MaxSlotAgentIDLen+1) + "-" + nonce, // over MaxIDLen
	} {
		if a, mm, n, err := ParseTicketID(bad); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("ParseTicketID(%q) = %q %v %q %v, want ErrInvalidSlot", bad, a, mm, n, err)
		}
	}
}

// slotFixture is a ticket of c1's agent a1 at 10:05 and the key of its slot.
func slotFixture(t *testing.T) (string, TicketEvent) {
	t.Helper()
	created := time.Date(2030, 5, 6, 10, 0, 30, 0, time.UTC)
	slot := time.Date(2030, 5, 6, 10, 5, 0, 0, time.UTC)
	id, err := NewSlotTicketID("a1", slot, "abcdefghijklmnop")
	if err != nil {
		t.Fatal(err)
	}
	return SlotKey("c1", "a1", slot), TicketEvent{Event: TicketCreated, Tenant: "c1", Ticket: id, Type: Gold, Agent: "a1",
		SlotTime: slot, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
}

func TestDecodeSlotRecordAccepts(t *testing.T) {
	t.Parallel()
	key, ev := slotFixture(t)
	expires := ev.CreatedAt.Add(30 * time.Second)
	cancelled := ev.CreatedAt.Add(time.Minute)
	for _, rec := range []SlotRecord{
		ConfirmedRecord(ev, 0),
		ConfirmedRecord(ev, 7),
		ReleasedRecord(ev, cancelled, 8),
		{State: SlotHeld, Tenant: "c1", Agent: "a1", SlotTime: ev.SlotTime, Prev: 3, Type: Gold, CreatedAt: ev.CreatedAt,
			Nonce: "abcdefghijkl", HoldExpiresAt: &expires},
		{State: SlotReleased, Type: Gold, CreatedAt: ev.CreatedAt}, // a minute freed without a ticket
	} {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		for _, check := range []TicketEventCheck{CheckWritable, CheckNames} {
			got, err := DecodeSlotRecord(key, data, check)
			if err != nil {
				t.Errorf("DecodeSlotRecord(%s, check %d): %v", data, check, err)
				continue
			}
			if got.State != rec.State || got.Ticket != rec.Ticket || got.Prev != rec.Prev {
				t.Errorf("decoded %+v, want %+v", got, rec)
			}
		}
	}
	// A ticket's records stand for its events.
	if got := ConfirmedRecord(ev, 0).Event(); got != ev {
		t.Errorf("confirmed Event() = %+v, want %+v", got, ev)
	}
	rel := ReleasedRecord(ev, cancelled, 8)
	if got := rel.Event(); got.Event != TicketCancelled || got.CancelledAt == nil || !got.CancelledAt.Equal(cancelled) ||
		got.Ticket != ev.Ticket || got.Check("c1", ev.Ticket) != nil {
		t.Errorf("released Event() = %+v", got)
	}
	if !rel.HasTicket() || !ConfirmedRecord(ev, 0).HasTicket() || (SlotRecord{State: SlotReleased}).HasTicket() ||
		(SlotRecord{State: SlotHeld, Ticket: ev.Ticket}).HasTicket() {
		t.Error("HasTicket is not: confirmed or released, with a ticket")
	}
}

func TestDecodeSlotRecordRefusals(t *testing.T) {
	t.Parallel()
	key, ev := slotFixture(t)
	marshal := func(rec SlotRecord) []byte {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	with := func(fn func(*SlotRecord)) []byte {
		rec := ConfirmedRecord(ev, 0)
		fn(&rec)
		return marshal(rec)
	}
	otherMinute, _ := NewSlotTicketID("a1", ev.SlotTime.Add(time.Minute), "abcdefghijklmnop")
	otherAgent, _ := NewSlotTicketID("a2", ev.SlotTime, "abcdefghijklmnop")
	good := marshal(ConfirmedRecord(ev, 0))
	cases := []struct {
		name     string
		key      string
		data     []byte
		writable bool // refused only under CheckWritable
	}{
		{"key that does not parse", "c1.a1", good, false},
		{"key of another tenant", SlotKey("c2", "a1", ev.SlotTime), good, false},
		{"key of another minute", SlotKey("c1", "a1", ev.SlotTime.Add(time.Minute)), good, false},
		{"not json", key, []byte("{"), false},
		{"not an object", key, []byte("[1]"), false},
		{"unknown state", key, with(func(r *SlotRecord) { r.State = "reserved" }), false},
		{"no state", key, with(func(r *SlotRecord) { r.State = "" }), false},
		{"hold without expiry", key, marshal(SlotRecord{State: SlotHeld, Type: Gold, CreatedAt: ev.CreatedAt, Nonce: "abcdefghijkl"}), false},
		{"record of another agent", key, with(func(r *SlotRecord) { r.Agent = "a2" }), false},
		{"record of another minute", key, with(func(r *SlotRecord) { r.SlotTime = r.SlotTime.Add(time.Minute) }), false},
		{"record without its tenant", key, with(func(r *SlotRecord) { r.Tenant = "" }), false},
		{"confirmed without a ticket", key, with(func(r *SlotRecord) { r.Ticket = "" }), false},
		{"ticket id of an earlier version", key, with(func(r *SlotRecord) { r.Ticket = NewID("t", RandomIDChars) }), false},
		{"ticket id of another minute", key, with(func(r *SlotRecord) { r.Ticket = otherMinute }), false},
		{"ticket id of another agent", key, with(func(r *SlotRecord) { r.Ticket = otherAgent }), false},
		{"released ticket without cancelled_at", key, with(func(r *SlotRecord) { r.State = SlotReleased }), false},
		{"unknown member", key, append(good[:len(good)-1:len(good)-1], []byte(`,"admin":true}`)...), true},
		{"data after the object", key, append(append([]byte{}, good...), []byte(` {}`)...), false},
		{"oversized", key, with(func(r *SlotRecord) { r.Nonce = strings.Repeat("n", MaxSlotRecordBytes) }), true},
		{"deadline not created_at + SLA", key, with(func(r *SlotRecord) { r.Deadline = r.Deadline.Add(time.Second) }), true},
		{"unknown type", key, with(func(r *SlotRecord) { r.Type = "PLATINUM" }), true},
		{"slot outside the window", key, with(func(r *SlotRecord) {
			r.CreatedAt, r.Deadline = r.CreatedAt.Add(10*time.Minute), r.Deadline.Add(10*time.Minute)
		}), true},
	}
	for _, c := range cases {
		if _, err := DecodeSlotRecord(c.key, c.data, CheckWritable); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("%s: CheckWritable: %v, want ErrInvalidSlot", c.name, err)
		}
		_, err := DecodeSlotRecord(c.key, c.data, CheckNames)
		if c.writable && err != nil {
			t.Errorf("%s: CheckNames refused it: %v", c.name, err)
		}
		if !c.writable && !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("%s: CheckNames: %v, want ErrInvalidSlot", c.name, err)
		}
	}
}

func TestSlotRecordBusy(t *testing.T) {
	t.Parallel()
	_, ev := slotFixture(t)
	now := ev.CreatedAt.Add(10 * time.Second)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	for _, c := range []struct {
		name string
		rec  SlotRecord
		busy bool
	}{
		{"confirmed", ConfirmedRecord(ev, 0), true},
		{"released", ReleasedRecord(ev, now, 1), false},
		{"released without a ticket", SlotRecord{State: SlotReleased}, false},
		{"hold before its expiry", SlotRecord{State: SlotHeld, HoldExpiresAt: at(time.Nanosecond)}, true},
		{"hold at its expiry", SlotRecord{State: SlotHeld, HoldExpiresAt: at(0)}, false},
		{"hold after its expiry", SlotRecord{State: SlotHeld, HoldExpiresAt: at(-time.Second)}, false},
		{"hold without an expiry", SlotRecord{State: SlotHeld}, false},
		{"unknown state", SlotRecord{State: "reserved"}, false},
	} {
		if got := c.rec.Busy(now); got != c.busy {
			t.Errorf("%s: Busy = %v, want %v", c.name, got, c.busy)
		}
	}
}
