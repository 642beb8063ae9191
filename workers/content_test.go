package workers_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
	"tms/workers/calendar"
)

// hostileDescription is a maximal description encoding/json escapes
// six times over.
func hostileDescription() string {
	return strings.Repeat("<>&", subjects.MaxDescriptionBytes/3) + "<"
}

// TestResponderCarriesContent: a reserve's and a confirm's content is in
// the ticket's confirmed record, a maximal hostile one included, and in
// its released record once cancelled; content past the limits, or on an
// operation that makes no ticket, is refused naming the member, with
// nothing written.
func TestResponderCarriesContent(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Content Inc")
	e.agentAt(t, ten, respT0.Add(-time.Hour))
	e.agentAt(t, ten, respT0.Add(-time.Hour))
	r := e.responder(t, nil)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) > 0 }, "agents seen")
	nc := e.nats.Connect(t)

	subject := strings.Repeat("&", subjects.MaxSubjectRunes)
	desc := hostileDescription()
	res := newReserve(ten.ID, subjects.Gold, respT0)
	res.Subject, res.Description = subject, desc
	got := mustAsk(t, nc, res)
	if got.Code != subjects.ETACreated {
		t.Fatalf("reserve with maximal content: %+v", got)
	}
	key := subjects.SlotKey(ten.ID, got.Agent, got.SlotTime)
	rec, _, ok := e.record(t, ten.ID, key)
	if !ok || rec.Subject != subject || rec.Description != desc {
		t.Fatalf("reserved record: content (%d, %d bytes), want (%d, %d)", len(rec.Subject), len(rec.Description),
			len(subject), len(desc))
	}
	if rel := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, respT0, got)); rel.Code != subjects.ETAOK {
		t.Fatalf("release: %+v", rel)
	}
	if rec, _, _ := e.record(t, ten.ID, key); rec.State != subjects.SlotReleased || rec.Subject != subject || rec.Description != desc {
		t.Fatalf("released record lost the content: %+v", rec.State)
	}

	hold := mustAsk(t, nc, e.holdReq(ten.ID, subjects.Gold))
	if hold.Code != subjects.ETAOK {
		t.Fatalf("hold: %+v", hold)
	}
	conf := confirmReq(ten.ID, subjects.Gold, hold.SlotID, subjects.NewTicketNonce())
	conf.Subject, conf.Description = "Confirmed", "with\ttext\r\n"
	if c := mustAsk(t, nc, conf); c.Code != subjects.ETAOK {
		t.Fatalf("confirm: %+v", c)
	}
	if rec, _, _ := e.record(t, ten.ID, subjects.SlotKey(ten.ID, hold.Agent, hold.SlotTime)); rec.State != subjects.SlotConfirmed ||
		rec.Subject != "Confirmed" || rec.Description != "with\ttext\r\n" {
		t.Fatalf("confirmed record: %+v", rec)
	}

	before := e.lastSlotSeq(t, ten.ID)
	withContent := func(req subjects.ETARequest, subject, desc string) subjects.ETARequest {
		req.Subject, req.Description = subject, desc
		return req
	}
	for _, c := range []struct {
		name  string
		req   subjects.ETARequest
		field string
	}{
		{"subject of 201 characters", withContent(newReserve(ten.ID, subjects.Gold, respT0), strings.Repeat("s", 201), ""), "subject"},
		{"a 50 KiB subject", withContent(newReserve(ten.ID, subjects.Gold, respT0), strings.Repeat("s", 50<<10), ""), "subject"},
		{"control in the subject", withContent(newReserve(ten.ID, subjects.Gold, respT0), "a\nb", ""), "subject"},
		{"description over 10 KiB", withContent(newReserve(ten.ID, subjects.Gold, respT0), "", strings.Repeat("d", 10241)), "description"},
		{"NUL in the description", withContent(newReserve(ten.ID, subjects.Gold, respT0), "", "a\x00b"), "description"},
		{"confirm with a long subject", withContent(confirmReq(ten.ID, subjects.Gold, hold.SlotID, subjects.NewTicketNonce()),
			strings.Repeat("s", 201), ""), "subject"},
		{"content on a hold", withContent(e.holdReq(ten.ID, subjects.Gold), "held", ""), "subject"},
		{"content on a release", withContent(releaseReq(ten.ID, subjects.Gold, respT0, got), "", "gone"), "description"},
		{"content on a capacity", withContent(subjects.ETARequest{Op: subjects.ETACapacity, Tenant: ten.ID, CreatedAt: respT0},
			"x", ""), "subject"},
	} {
		reply := mustAsk(t, nc, c.req)
		if reply.Code != http.StatusBadRequest || reply.Error != subjects.ETACodeInvalidField || reply.Field != c.field {
			t.Errorf("%s: %+v, want 400 invalid_field on %s", c.name, reply, c.field)
		}
	}
	if after := e.lastSlotSeq(t, ten.ID); after != before {
		t.Errorf("refused requests wrote %d records", after-before)
	}
}

// TestSlotLimitsUpgrade: buckets and streams made by a version with the
// old bounds (a 4 KiB slot record) are raised on start, so a record with
// a maximal content is accepted by the slot bucket, and the parked and
// dead-letter streams take it too.
func TestSlotLimitsUpgrade(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	const oldRecord = 4 << 10
	for shard := range subjects.DefaultSlotShards {
		old := subjects.SlotBucketConfig(shard, 1, 0)
		old.MaxValueSize = oldRecord
		if _, err := e.js.CreateKeyValue(ctx, old); err != nil {
			t.Fatal(err)
		}
	}
	parked, dead := subjects.ParkedStreamConfig(1), subjects.DeadLettersStreamConfig(1)
	parked.MaxMsgSize, dead.MaxMsgSize = oldRecord+4<<10, 64<<10
	for _, cfg := range []jetstream.StreamConfig{parked, dead} {
		if _, err := e.js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	ten := e.account(t, "Upgrade Inc")
	big := func() []byte {
		_, ev := contentEvent(t, ten.ID)
		data := marshalRecord(t, subjects.ConfirmedRecord(ev, 0))
		if len(data) <= 6*subjects.MaxDescriptionBytes {
			t.Fatalf("the test record is %d bytes, not over the old bounds", len(data))
		}
		return data
	}()
	key, _ := contentEvent(t, ten.ID)
	if _, err := e.slotKV(t, ten.ID).Put(ctx, key, big); err == nil {
		t.Fatal("the old bucket took a record over its 4 KiB bound: the test proves nothing")
	}
	for _, name := range []string{subjects.StreamParked, subjects.StreamDeadLetters} {
		if _, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: map[string]string{subjects.StreamParked: subjects.ParkedSubject(ten.ID, "t1"),
			subjects.StreamDeadLetters: subjects.DeadLetterSubject(ten.ID, "t1")}[name], Data: make([]byte, 70<<10)}); err == nil {
			t.Fatalf("the old stream %s took 70 KiB: the test proves nothing", name)
		}
	}

	e.responder(t, nil) // opens (and so updates) every slot bucket
	if err := workers.EnsureStreams(ctx, e.js, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.slotKV(t, ten.ID).Put(ctx, key, big); err != nil {
		t.Fatalf("after start, the slot bucket refuses a maximal record: %v", err)
	}
	for _, name := range []string{subjects.StreamParked, subjects.StreamDeadLetters} {
		st, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		// Any record the slot bucket takes, hostile or not, and its
		// headers: a dead letter is one the allocators refuse.
		if got := st.CachedInfo().Config.MaxMsgSize; got < subjects.MaxSlotRecordBytes+1<<10 {
			t.Errorf("stream %s MaxMsgSize %d after start: a %d-byte record and its headers do not fit", name, got,
				subjects.MaxSlotRecordBytes)
		}
	}
	// A second start changes nothing (the configurations now cover).
	kv, err := jskit.OpenBucket(ctx, e.js, subjects.SlotBucketConfig(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(ctx); err != nil || st.Config().MaxValueSize != subjects.MaxSlotRecordBytes {
		t.Fatalf("bucket MaxValueSize after start: %v", err)
	}
}

// contentEvent is a GOLD ticket of tenant at respT0 with maximal hostile
// content, and the key of its slot.
func contentEvent(t *testing.T, tenant string) (string, subjects.TicketEvent) {
	t.Helper()
	slot := respT0.Add(5 * time.Minute)
	id, err := subjects.NewSlotTicketID("a1", slot, "contentcontentco")
	if err != nil {
		t.Fatal(err)
	}
	return subjects.SlotKey(tenant, "a1", slot), subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: tenant,
		Ticket: id, Type: subjects.Gold, Agent: "a1", SlotTime: slot, CreatedAt: respT0, Deadline: respT0.Add(2 * time.Hour),
		Subject: strings.Repeat("<", subjects.MaxSubjectRunes), Description: hostileDescription()}
}

func marshalRecord(t *testing.T, rec subjects.SlotRecord) []byte {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
