package subjects

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// hostileDescription is a description of exactly MaxDescriptionBytes
// bytes that encoding/json writes six bytes for each of: every byte one
// of "<>&".
func hostileDescription() string { return strings.Repeat("<>&", MaxDescriptionBytes/3) + "<" }

func TestCheckContent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, subject, description, field string
	}{
		{"none", "", "", ""},
		{"plain", "Printer on fire", "It is.\nReally.\r\n\tSend help.", ""},
		{"subject of 200 characters", strings.Repeat("é", MaxSubjectRunes), "", ""},
		{"subject of 200 four-byte characters", strings.Repeat("😀", MaxSubjectRunes), "", ""},
		{"description of 10 KiB", "", strings.Repeat("x", MaxDescriptionBytes), ""},
		{"hostile description of 10 KiB", "", hostileDescription(), ""},
		{"subject of 201 characters", strings.Repeat("é", MaxSubjectRunes+1), "", "subject"},
		{"subject with a newline", "two\nlines", "", "subject"},
		{"subject with a tab", "a\tb", "", "subject"},
		{"subject with NUL", "a\x00b", "", "subject"},
		{"subject with DEL", "a\x7fb", "", "subject"},
		{"subject with a C1 control", "a\u0085b", "", "subject"},
		{"subject not UTF-8", "a\xffb", "", "subject"},
		{"subject of a lone surrogate", "a\xed\xb0\x80b", "", "subject"},
		{"description of 10 KiB and a byte", "", strings.Repeat("x", MaxDescriptionBytes+1), "description"},
		{"description of 10 KiB in two-byte characters and a byte", "", strings.Repeat("é", MaxDescriptionBytes/2) + "x", "description"},
		{"description with NUL", "", "a\x00b", "description"},
		{"description with ESC", "", "a\x1b[2Jb", "description"},
		{"description with a C1 control", "", "a\u009bb", "description"},
		{"description not UTF-8", "", "a\xc3", "description"},
	} {
		err := CheckContent(c.subject, c.description)
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", c.name, err)
			}
			continue
		}
		ce, ok := errors.AsType[*ContentError](err)
		if !ok || ce.Field != c.field || ce.Reason == "" {
			t.Errorf("%s: %v, want a *ContentError on %s", c.name, err, c.field)
		}
	}
	// The limits are in the messages.
	if err := CheckContent(strings.Repeat("a", 201), ""); err == nil || !strings.Contains(err.Error(), "200") {
		t.Errorf("long subject: %v, want the limit named", err)
	}
	if err := CheckContent("", strings.Repeat("a", 10241)); err == nil || !strings.Contains(err.Error(), "10240") {
		t.Errorf("long description: %v, want the limit named", err)
	}
}

// TestTicketEventChecksContent: the allocator's Check and the database's
// CheckRow both refuse content CheckContent refuses.
func TestTicketEventChecksContent(t *testing.T) {
	t.Parallel()
	ev := goodEvent()
	ev.Subject, ev.Description = strings.Repeat("s", MaxSubjectRunes), hostileDescription()
	if err := ev.Check("c1", "t1"); err != nil {
		t.Fatalf("Check refused maximal content: %v", err)
	}
	if err := ev.CheckRow(); err != nil {
		t.Fatalf("CheckRow refused maximal content: %v", err)
	}
	for _, bad := range []func(*TicketEvent){
		func(ev *TicketEvent) { ev.Subject = strings.Repeat("s", 50<<10) },
		func(ev *TicketEvent) { ev.Subject = "a\rb" },
		func(ev *TicketEvent) { ev.Description = strings.Repeat("x", MaxDescriptionBytes+1) },
		func(ev *TicketEvent) { ev.Description = "\x00" },
	} {
		ev := goodEvent()
		bad(&ev)
		if err := ev.Check("c1", "t1"); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Check(%q, %d bytes) = %v, want ErrInvalidEvent", ev.Subject[:min(len(ev.Subject), 8)], len(ev.Description), err)
		}
		if err := ev.CheckRow(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("CheckRow(%q, %d bytes) = %v, want ErrInvalidEvent", ev.Subject[:min(len(ev.Subject), 8)], len(ev.Description), err)
		}
	}
}

// TestSlotRecordCarriesContent: a ticket's content is in its confirmed
// record, its event, every move of it and its cancel; a vacated record
// has none; a maximal hostile content round-trips through the strict
// decoder within MaxSlotRecordBytes.
func TestSlotRecordCarriesContent(t *testing.T) {
	t.Parallel()
	key, ev := slotFixture(t)
	ev.Subject = strings.Repeat("&", MaxSubjectRunes)
	ev.Description = hostileDescription()
	rec := ConfirmedRecord(ev, 3)
	if rec.Subject != ev.Subject || rec.Description != ev.Description {
		t.Fatal("ConfirmedRecord dropped the content")
	}
	if got := rec.Event(); got != ev {
		t.Errorf("Event() = %+v, want the event with its content", got)
	}
	rec.Moves = 2 // the largest record: every member set
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > MaxSlotRecordBytes || len(data) < 6*MaxDescriptionBytes {
		t.Fatalf("a maximal record is %d bytes; want it escaped (over %d) and within %d", len(data), 6*MaxDescriptionBytes,
			MaxSlotRecordBytes)
	}
	rec.Moves = 0
	data, _ = json.Marshal(rec)
	got, err := DecodeSlotRecord(key, data, CheckWritable)
	if err != nil {
		t.Fatalf("the strict decoder refused a maximal record: %v", err)
	}
	if got.Subject != ev.Subject || got.Description != ev.Description {
		t.Error("content did not round-trip")
	}

	moved := MovedRecord(rec, "a2", ev.SlotTime.Add(time.Minute), 9)
	if moved.Subject != ev.Subject || moved.Description != ev.Description || moved.Event().Description != ev.Description {
		t.Error("MovedRecord dropped the content")
	}
	released := ReleasedRecord(rec.Event(), ev.CreatedAt.Add(time.Minute), 4)
	if released.Subject != ev.Subject || released.Description != ev.Description ||
		released.Event().Subject != ev.Subject || released.Event().Event != TicketCancelled {
		t.Error("ReleasedRecord dropped the content")
	}
	if v := VacatedRecord(rec, "a2", ev.SlotTime.Add(time.Minute), 4); v.Subject != "" || v.Description != "" {
		t.Error("a vacated record carries the moved ticket's content")
	}
	// A record without content writes no member for it.
	_, plain := slotFixture(t)
	data, _ = json.Marshal(ConfirmedRecord(plain, 0))
	if strings.Contains(string(data), "subject") || strings.Contains(string(data), "description") {
		t.Errorf("a record without content has content members: %s", data)
	}
}

// TestDecodeSlotRecordBoundsContent: a record written by anyone but the
// responders is bounded like a request: content past the limits, or on
// a record of no ticket, is not writable.
func TestDecodeSlotRecordBoundsContent(t *testing.T) {
	t.Parallel()
	key, ev := slotFixture(t)
	expires := ev.CreatedAt.Add(30 * time.Second)
	for name, rec := range map[string]SlotRecord{
		"a 50 KiB subject": func() SlotRecord {
			r := ConfirmedRecord(ev, 0)
			r.Subject = strings.Repeat("s", 50<<10)
			return r
		}(),
		"a control character in the subject": func() SlotRecord {
			r := ConfirmedRecord(ev, 0)
			r.Subject = "a\nb"
			return r
		}(),
		"a description over 10 KiB": func() SlotRecord {
			r := ReleasedRecord(ev, ev.CreatedAt.Add(time.Minute), 1)
			r.Description = strings.Repeat("d", MaxDescriptionBytes+1)
			return r
		}(),
		"content on a hold": {State: SlotHeld, Tenant: "c1", Agent: "a1", SlotTime: ev.SlotTime, Type: Gold,
			CreatedAt: ev.CreatedAt, Nonce: "abcdefghijkl", HoldExpiresAt: &expires, Subject: "held"},
	} {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSlotRecord(key, data, CheckWritable); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("%s: CheckWritable = %v, want ErrInvalidSlot", name, err)
		}
	}
}

// TestStreamsHoldARecord: the streams that keep slot records whole (the
// parked stream, the dead letters) take a record of MaxSlotRecordBytes
// and the headers beside it, and so do the ETA responders a request.
func TestStreamsHoldARecord(t *testing.T) {
	t.Parallel()
	if c := ParkedStreamConfig(1); c.MaxMsgSize < MaxSlotRecordBytes+1<<10 {
		t.Errorf("parked stream MaxMsgSize %d, under a record and its headers", c.MaxMsgSize)
	}
	if c := DeadLettersStreamConfig(1); c.MaxMsgSize < MaxSlotRecordBytes+1<<10 {
		t.Errorf("dead letters MaxMsgSize %d, under a record and its headers", c.MaxMsgSize)
	}
	if c := SlotBucketConfig(0, 1, 0); c.MaxValueSize != MaxSlotRecordBytes {
		t.Errorf("slot bucket MaxValueSize %d, want %d", c.MaxValueSize, MaxSlotRecordBytes)
	}
}
