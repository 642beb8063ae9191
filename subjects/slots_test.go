package subjects

import (
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
