package subjects

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestParkedSubjects(t *testing.T) {
	t.Parallel()
	s := ParkedSubject("c1", "t2")
	if s != "tms.parked.c1.t2" {
		t.Errorf("ParkedSubject = %q", s)
	}
	if tenant, ticket, err := ParseParkedSubject(s); err != nil || tenant != "c1" || ticket != "t2" {
		t.Errorf("ParseParkedSubject = %q %q %v", tenant, ticket, err)
	}
	for _, bad := range []string{"tms.parked.c1", "tms.parked.c1.t2.x", "tms.parked..t2", "tms.parked.C1.t2",
		"tms.tickets.c1.t2", "tms.parked.c1.*", ""} {
		if _, _, err := ParseParkedSubject(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseParkedSubject(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	if f := TenantParked("c1"); f != "tms.parked.c1.>" || !strings.HasPrefix(s, strings.TrimSuffix(f, ">")) {
		t.Errorf("TenantParked = %q", f)
	}
	if !strings.HasPrefix(s, strings.TrimSuffix(ParkedAll, ">")) {
		t.Errorf("%q is not under %q", s, ParkedAll)
	}
	if id := ParkedMsgID("$KV.TMS_RESERVATIONS_1.c1.a1.203001020304", 17); id != "$KV.TMS_RESERVATIONS_1.c1.a1.203001020304:17" {
		t.Errorf("ParkedMsgID = %q", id)
	}
	for _, bad := range []string{"c1.x", "", "C1"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ParkedSubject(%q, t2) did not panic", bad)
				}
			}()
			ParkedSubject(bad, "t2")
		}()
	}
}

// TestParkedStreamConfig: kept until written (no age, no message or byte
// limit that would discard a record), deleted by the ack, readable by
// direct get, deduplicating a re-park.
func TestParkedStreamConfig(t *testing.T) {
	t.Parallel()
	c := ParkedStreamConfig(0)
	if c.Name != StreamParked || len(c.Subjects) != 1 || c.Subjects[0] != ParkedAll {
		t.Errorf("name %q subjects %v", c.Name, c.Subjects)
	}
	if c.MaxAge != 0 || c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxMsgsPerSubject > 0 {
		t.Errorf("limits that drop records: %+v", c)
	}
	if c.Retention != jetstream.WorkQueuePolicy || c.Storage != jetstream.FileStorage || !c.AllowDirect ||
		c.Duplicates <= 0 || c.Replicas != 1 || c.MaxMsgSize < MaxSlotRecordBytes {
		t.Errorf("config %+v", c)
	}
	if r := ParkedStreamConfig(3).Replicas; r != 3 {
		t.Errorf("replicas %d, want 3", r)
	}
}

// TestDecodeParkedRecord: a parked ticket's record reads back as its
// event; a record of another ticket or key, a hold, an original that is
// no slot subject or a body that does not decode are refused.
func TestDecodeParkedRecord(t *testing.T) {
	t.Parallel()
	key, ev := slotFixture(t)
	original := "$KV." + SlotBucket(1) + "." + key
	subject := ParkedSubject(ev.Tenant, ev.Ticket)
	marshal := func(rec SlotRecord) []byte {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rec, err := DecodeParkedRecord(subject, original, marshal(ConfirmedRecord(ev, 4)))
	if err != nil || rec.Event().Event != TicketCreated || rec.Ticket != ev.Ticket || rec.Prev != 4 {
		t.Fatalf("confirmed read back as %+v, %v", rec, err)
	}
	rec, err = DecodeParkedRecord(subject, original, marshal(ReleasedRecord(ev, ev.CreatedAt.Add(time.Minute), 5)))
	if err != nil || rec.Event().Event != TicketCancelled {
		t.Fatalf("released read back as %+v, %v", rec, err)
	}
	other := ConfirmedRecord(ev, 0)
	other.Ticket, err = NewSlotTicketID(ev.Agent, ev.SlotTime, "qqqqqqqqqqqqqqqq")
	if err != nil {
		t.Fatal(err)
	}
	expires := ev.CreatedAt.Add(time.Minute)
	hold := SlotRecord{State: SlotHeld, Tenant: ev.Tenant, Agent: ev.Agent, SlotTime: ev.SlotTime, Type: ev.Type,
		CreatedAt: ev.CreatedAt, Nonce: NewHoldNonce(), HoldExpiresAt: &expires}
	for name, c := range map[string]struct {
		subject, original string
		data              []byte
	}{
		"another ticket":   {subject, original, marshal(other)},
		"a hold":           {subject, original, marshal(hold)},
		"not a slot":       {subject, "tms.tickets.x.y", marshal(ConfirmedRecord(ev, 0))},
		"another key":      {subject, "$KV." + SlotBucket(1) + "." + SlotKey(ev.Tenant, ev.Agent, ev.SlotTime.Add(time.Minute)), marshal(ConfirmedRecord(ev, 0))},
		"bad subject":      {"tms.parked." + ev.Tenant, original, marshal(ConfirmedRecord(ev, 0))},
		"not json":         {subject, original, []byte("{")},
		"another tenant's": {ParkedSubject("cother", ev.Ticket), original, marshal(ConfirmedRecord(ev, 0))},
	} {
		if rec, err := DecodeParkedRecord(c.subject, c.original, c.data); err == nil {
			t.Errorf("%s: read back as %+v", name, rec)
		} else if !errors.Is(err, ErrInvalidSlot) && !errors.Is(err, ErrInvalidID) {
			t.Errorf("%s: %v, want ErrInvalidSlot or ErrInvalidID", name, err)
		}
	}
}
