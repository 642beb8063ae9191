package subjects

import (
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
	if SlotBucket(3) != "TMS_SLOTS_3" {
		t.Errorf("SlotBucket(3) = %q", SlotBucket(3))
	}
}
