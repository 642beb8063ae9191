package workers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

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

// TestAllocatorWritesContent: the allocators write a ticket's content from
// its record into its row (NULL for none), also when the record was
// parked through an outage of its tenant database and written after it.
func TestAllocatorWritesContent(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 4, metrics: metrics})
	subject, desc := strings.Repeat("<", subjects.MaxSubjectRunes), hostileDescription()
	rich := e.event("rich", 0)
	rich.Subject, rich.Description = subject, desc
	plain := e.event("plain", 1)
	e.confirm(t, rich)
	e.confirm(t, plain)
	e.waitRows(t, 2)
	content := func(id string) (string, string, bool) {
		t.Helper()
		var s, d *string
		ctx := testkit.Context(t, 10*time.Second)
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if err := conn.QueryRow(ctx, `SELECT subject, description FROM tickets WHERE id = $1`, id).Scan(&s, &d); err != nil {
			t.Fatalf("row %s: %v", id, err)
		}
		if s == nil || d == nil {
			return "", "", s == nil && d == nil
		}
		return *s, *d, false
	}
	if s, d, _ := content(rich.Ticket); s != subject || d != desc {
		t.Errorf("row content (%d, %d bytes), want (%d, %d)", len(s), len(d), len(subject), len(desc))
	}
	if _, _, null := content(plain.Ticket); !null {
		t.Error("a ticket without content has non-NULL content columns")
	}

	restore := testkit.RefuseConnections(t, e.ten.DBName)
	parked := e.event("parked", 2)
	parked.Subject, parked.Description = "parked", desc
	e.confirm(t, parked)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterValue(t, metrics, "tms_allocator_parked_total", subjects.TicketCreated) >= 1
	}, "the record parked")
	restore()
	e.waitRows(t, 3)
	if s, d, _ := content(parked.Ticket); s != "parked" || d != desc {
		t.Errorf("parked ticket's row content (%q, %d bytes), want (parked, %d)", s, len(d), len(desc))
	}
}

// TestMovesCarryContent: a ticket moved by feasibility admission or by a
// re-plan keeps its content at its new minute; the record that takes its
// old minute (the new ticket's, or a vacated one) has only its own.
func TestMovesCarryContent(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	nc := e.nats.Connect(t)
	subjectOf := func(i int) string { return fmt.Sprintf("ticket %d <&>", i) }

	// Feasibility admission: 120 BRONZE fill one agent's GOLD window, then
	// a GOLD moves one of them.
	one, _, _ := e.plannedTenant(t, "Move Content", 1, nil)
	want := map[string]string{}
	for i := range 120 {
		req := newReserve(one.ID, subjects.Bronze, respT0)
		req.Subject, req.Description = subjectOf(i), "bronze\n"+subjectOf(i)
		rep := mustAsk(t, nc, req)
		if rep.Code != subjects.ETACreated {
			t.Fatalf("BRONZE %d: %+v", i, rep)
		}
		want[rep.Ticket] = subjectOf(i)
	}
	gold := newReserve(one.ID, subjects.Gold, respT0)
	gold.Subject = "gold"
	rep := mustAsk(t, nc, gold)
	if rep.Code != subjects.ETACreated || rep.Moves != 1 {
		t.Fatalf("GOLD: %+v, want created with one move", rep)
	}
	want[rep.Ticket] = "gold"
	moved := 0
	for id, rec := range checkPlan(t, e.readPlan(t, one.ID)) {
		if rec.Subject != want[id] {
			t.Errorf("ticket %s (moves %d): subject %q, want %q", id, rec.Moves, rec.Subject, want[id])
		}
		if rec.Type == subjects.Bronze && rec.Description != "bronze\n"+want[id] {
			t.Errorf("ticket %s (moves %d): description %q", id, rec.Moves, rec.Description)
		}
		if rec.Type == subjects.Gold && rec.Description != "" {
			t.Errorf("the GOLD ticket has a description %q", rec.Description)
		}
		moved += rec.Moves
	}
	if moved != 1 {
		t.Fatalf("%d moves in the plan, want 1", moved)
	}

	// A re-plan: two agents, tickets on the first rescued onto the second.
	two, agents, r := e.plannedTenant(t, "Replan Content", 2, nil)
	want = map[string]string{}
	for i := range 6 {
		req := newReserve(two.ID, subjects.Gold, respT0)
		req.Subject = subjectOf(i)
		rep := mustAsk(t, nc, req)
		if rep.Code != subjects.ETACreated {
			t.Fatalf("GOLD %d: %+v", i, rep)
		}
		want[rep.Ticket] = subjectOf(i)
	}
	e.setStatus(t, two, agents[0].ID, subjects.AgentUnavailable, respT0)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(two.ID, first, last) < 120*2-6 },
		"the responder sees the agent gone")
	if rep := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAReplan, Tenant: two.ID}); rep.Code != subjects.ETAOK || rep.Moved != 3 {
		t.Fatalf("replan: %+v, want 3 moved", rep)
	}
	plan := e.readPlan(t, two.ID)
	for id, rec := range checkPlan(t, plan) {
		if rec.Agent == agents[0].ID || rec.Subject != want[id] {
			t.Errorf("ticket %s at %s (moves %d): subject %q, want %q on the other agent", id, rec.Agent, rec.Moves,
				rec.Subject, want[id])
		}
	}
	vacated := 0
	for key, rec := range plan.keys {
		if rec.State == subjects.SlotVacated {
			vacated++
			if rec.Subject != "" || rec.Description != "" {
				t.Errorf("vacated record %s carries content", key)
			}
		}
	}
	if vacated != 3 {
		t.Errorf("%d vacated records, want 3", vacated)
	}
}
