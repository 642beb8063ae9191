package workers_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
	"tms/workers/calendar"
)

type accepted struct {
	ticket string
	agent  string
	slot   time.Time
}

// checkBookings proves I2 and I3 for the accepted tickets: distinct
// agent-minutes, each inside its window, and the KV keys are exactly
// those reservations, each naming its ticket.
func checkBookings(t *testing.T, e *respEnv, tenant string, got []accepted, created time.Time, typ string) {
	t.Helper()
	first, last, _ := calendar.Window(created, typ)
	seen := map[string]string{}
	for _, a := range got {
		if a.slot.Before(first) || a.slot.After(last) {
			t.Errorf("I3: ticket %s got slot %v outside [%v, %v]", a.ticket, a.slot, first, last)
		}
		key := subjects.SlotKey(tenant, a.agent, a.slot)
		if other, dup := seen[key]; dup {
			t.Errorf("I2: %s given to %s and %s", key, other, a.ticket)
		}
		seen[key] = a.ticket
	}
	keys := e.slotKeys(t, tenant)
	if len(keys) != len(seen) {
		t.Errorf("%d slot keys in KV, want %d (one per accepted ticket)", len(keys), len(seen))
	}
	for key, ticket := range seen {
		if rec, ok := keys[key]; !ok || rec.Ticket != ticket || rec.State != subjects.SlotConfirmed {
			t.Errorf("key %s = %+v (present %v), want confirmed for %s", key, rec, ok, ticket)
		}
	}
}

func TestResponderNoDoubleBooking(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Busy Corp")
	e.agentAt(t, ten, respT0)
	e.agentAt(t, ten, respT0)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	var rs []*workers.Responder
	for _, reg := range regs {
		rs = append(rs, e.responder(t, func(c *workers.ResponderConfig) { c.Metrics = reg }))
	}
	for _, r := range rs {
		testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 240 },
			"both responders see two agents")
	}
	const capacity, requests, clients = 240, 400, 40
	client := e.nats.Connect(t)
	var (
		mu       sync.Mutex
		got      []accepted
		rejected int
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	for c := 0; c < clients; c++ {
		wg.Go(func() {
			for i := range next {
				req := reserveReq(ten.ID, subjects.Gold, fmt.Sprintf("t%03d", i), respT0)
				for try := 0; ; try++ {
					reply, err := ask(t, client, subjects.ETA(ten.ID), req)
					if err != nil {
						t.Errorf("request %d: %v", i, err)
						return
					}
					if reply.Code == http.StatusServiceUnavailable && try < 20 {
						continue // contention: the client tries again
					}
					mu.Lock()
					switch reply.Code {
					case http.StatusCreated:
						got = append(got, accepted{req.Ticket, reply.Agent, reply.SlotTime})
					case http.StatusConflict:
						rejected++
					default:
						t.Errorf("request %d: %+v", i, reply)
					}
					mu.Unlock()
					break
				}
			}
		})
	}
	for i := 0; i < requests; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(got) != capacity || rejected != requests-capacity {
		t.Fatalf("accepted %d, rejected %d; want exactly %d and %d", len(got), rejected, capacity, requests-capacity)
	}
	checkBookings(t, e, ten.ID, got, respT0, subjects.Gold)
	for i, reg := range regs {
		n := counter(t, reg, "tms_eta_requests_total")
		if n == 0 {
			t.Errorf("responder %d answered nothing: the queue group did not share the load", i)
		}
		t.Logf("responder %d answered %.0f requests, lost %.0f creates", i, n,
			counter(t, reg, "tms_eta_kv_create_conflicts_total"))
	}
}

func TestResponderRejectionLeavesNoTrace(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	empty := e.account(t, "No Agents")
	one := e.account(t, "One Slot")
	e.agentAt(t, one, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC)) // only 11:59 fits GOLD from 10:00
	e.responder(t, nil)
	nc := e.nats.Connect(t)

	if reply := mustAsk(t, nc, reserveReq(empty.ID, subjects.Gold, "x1", respT0)); reply.Code != http.StatusConflict ||
		reply.Error != "sla_unavailable" {
		t.Fatalf("no agents: %+v", reply)
	}
	if keys := e.slotKeys(t, empty.ID); len(keys) != 0 {
		t.Fatalf("I4: a 409 left keys %v", keys)
	}
	r1 := mustAsk(t, nc, reserveReq(one.ID, subjects.Gold, "first", respT0))
	if r1.Code != http.StatusCreated || !r1.SlotTime.Equal(time.Date(2030, 5, 6, 11, 59, 0, 0, time.UTC)) {
		t.Fatalf("first: %+v", r1)
	}
	for i := 0; i < 3; i++ {
		if reply := mustAsk(t, nc, reserveReq(one.ID, subjects.Gold, fmt.Sprintf("late%d", i), respT0)); reply.Code != http.StatusConflict {
			t.Fatalf("late%d: %+v", i, reply)
		}
	}
	checkBookings(t, e, one.ID, []accepted{{"first", r1.Agent, r1.SlotTime}}, respT0, subjects.Gold)
}

// waitPurge waits (bounded) until key is deleted or purged, watching it.
func waitPurge(t *testing.T, kv jetstream.KeyValue, key string, w jetstream.KeyWatcher) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case en := <-w.Updates():
			if en != nil && en.Key() == key && en.Operation() != jetstream.KeyValuePut {
				return
			}
		case <-timeout:
			t.Fatalf("key %s was not removed within 15s", key)
		}
	}
}

func watchKey(t *testing.T, kv jetstream.KeyValue, key string) jetstream.KeyWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kv.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = w.Stop()
		cancel()
	})
	return w
}

func TestResponderHolds(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Holds Inc")
	// Two agents from 11:59: the GOLD window from 10:00 has two slots.
	a := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 1, 0, time.UTC))
	b := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 2, 0, time.UTC))
	if b.ID < a.ID {
		a, b = b, a // ties go to the smaller id: a is the first one handed out
	}
	slot := time.Date(2030, 5, 6, 11, 59, 0, 0, time.UTC)
	r := e.responder(t, func(c *workers.ResponderConfig) { c.HoldTTL = time.Second })
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 2 }, "agents seen")
	nc := e.nats.Connect(t)
	kv, err := e.js.KeyValue(testkit.Context(t, 10*time.Second), subjects.SlotBucket(subjects.SlotShard(ten.ID, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	keyA, keyB := subjects.SlotKey(ten.ID, a.ID, slot), subjects.SlotKey(ten.ID, b.ID, slot)
	wA, wB := watchKey(t, kv, keyA), watchKey(t, kv, keyB)
	hold := func() subjects.ETAReply {
		return mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAHold, Tenant: ten.ID, Type: subjects.Gold, CreatedAt: e.clock.Now()})
	}
	confirm := func(slotID, ticket string) subjects.ETAReply {
		return mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAConfirm, Tenant: ten.ID, Type: subjects.Gold, SlotID: slotID, Ticket: ticket})
	}
	// holdOn retries until the responder has seen the slot free again;
	// every 409 on the way writes nothing.
	holdOn := func(agent string) subjects.ETAReply {
		var h subjects.ETAReply
		testkit.Eventually(t, 10*time.Second, func() bool {
			h = hold()
			return h.Code == http.StatusOK
		}, "a hold on the freed slot")
		if h.Agent != agent || !h.SlotTime.Equal(slot) {
			t.Fatalf("hold %+v, want %s at %v", h, agent, slot)
		}
		return h
	}

	h1 := hold()
	if h1.Code != http.StatusOK || h1.Agent != a.ID || !h1.SlotTime.Equal(slot) || h1.HoldExpiresAt == nil ||
		!h1.HoldExpiresAt.Equal(respT0.Add(time.Second)) {
		t.Fatalf("hold 1: %+v", h1)
	}
	if ag, m, _, err := subjects.ParseSlotID(h1.SlotID); err != nil || ag != a.ID || !m.Equal(slot) {
		t.Fatalf("slot id %q: %v", h1.SlotID, err)
	}
	h2 := hold()
	if h2.Code != http.StatusOK || h2.Agent != b.ID {
		t.Fatalf("hold 2: %+v", h2)
	}
	if h := hold(); h.Code != http.StatusConflict {
		t.Fatalf("hold 3 with both slots held: %+v", h)
	}

	// I5: the hold expires by itself; a confirm after that is 410.
	waitPurge(t, kv, keyA, wA)
	if c := confirm(h1.SlotID, "late"); c.Code != http.StatusGone || c.Error != "hold_expired" {
		t.Fatalf("confirm after expiry: %+v", c)
	}
	h3 := holdOn(a.ID)
	c3 := confirm(h3.SlotID, "tk3")
	if c3.Code != http.StatusOK || c3.Agent != a.ID || !c3.SlotTime.Equal(slot) || !c3.CreatedAt.Equal(respT0) {
		t.Fatalf("confirm: %+v", c3)
	}
	if again := confirm(h3.SlotID, "tk3"); again.Code != http.StatusOK || again.Revision != c3.Revision {
		t.Fatalf("repeated confirm: %+v, want the same answer %+v", again, c3)
	}
	if other := confirm(h3.SlotID, "tk4"); other.Code != http.StatusGone {
		t.Fatalf("confirm of a confirmed slot for another ticket: %+v", other)
	}
	// The confirmed message carries the long TTL, not the hold's.
	st, err := e.js.Stream(testkit.Context(t, 10*time.Second), "KV_"+subjects.SlotBucket(subjects.SlotShard(ten.ID, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(testkit.Context(t, 10*time.Second), subjects.SlotSubject(ten.ID, a.ID, slot, subjects.DefaultSlotShards))
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := time.ParseDuration(raw.Header.Get(jetstream.MsgTTLHeader))
	if err != nil || ttl < 15*time.Minute {
		t.Fatalf("confirmed key's Nats-TTL = %q (%v), want at least the slot's end plus the margin", raw.Header.Get(jetstream.MsgTTLHeader), err)
	}
	// And it outlives a hold made after it: once that hold has expired,
	// the confirmed key is still there.
	waitPurge(t, kv, keyB, wB)
	h4 := holdOn(b.ID)
	waitPurge(t, kv, keyB, wB)
	_ = h4
	keys := e.slotKeys(t, ten.ID)
	if rec, ok := keys[keyA]; !ok || rec.State != subjects.SlotConfirmed || rec.Ticket != "tk3" {
		t.Fatalf("confirmed reservation gone after a later hold expired: %v", keys)
	}
	if len(keys) != 1 {
		t.Fatalf("keys %v, want only the confirmed one", keys)
	}
}

func TestResponderConfirmTypeMismatch(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Types Ltd")
	e.agentAt(t, ten, time.Date(2030, 5, 6, 13, 0, 0, 0, time.UTC)) // beyond GOLD, inside BRONZE
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	h := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAHold, Tenant: ten.ID, Type: subjects.Bronze, CreatedAt: respT0})
	if h.Code != http.StatusOK || !h.SlotTime.Equal(time.Date(2030, 5, 6, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("hold: %+v", h)
	}
	c := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAConfirm, Tenant: ten.ID, Type: subjects.Gold, SlotID: h.SlotID, Ticket: "g1"})
	if c.Code != http.StatusConflict || c.Error != "type_mismatch" {
		t.Fatalf("GOLD confirm of a BRONZE-only slot: %+v", c)
	}
	bad := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAConfirm, Tenant: ten.ID, Type: subjects.Gold, SlotID: "nope", Ticket: "g1"})
	if bad.Code != http.StatusBadRequest || bad.Error != "invalid_field" {
		t.Fatalf("malformed slot id: %+v", bad)
	}
	// The hold stayed: it can still be confirmed with a type that fits.
	c = mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAConfirm, Tenant: ten.ID, Type: subjects.Bronze, SlotID: h.SlotID, Ticket: "b1"})
	if c.Code != http.StatusOK {
		t.Fatalf("BRONZE confirm: %+v", c)
	}
}

func TestResponderReleaseFreesAtOnce(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Cancel Co")
	ag := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC))
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	r1 := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, "t1", respT0))
	if r1.Code != http.StatusCreated {
		t.Fatalf("t1: %+v", r1)
	}
	if r := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, "t2", respT0)); r.Code != http.StatusConflict {
		t.Fatalf("t2: %+v", r)
	}
	release := func(ticket string) subjects.ETAReply {
		return mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETARelease, Tenant: ten.ID, Ticket: ticket, Agent: ag.ID, SlotTime: r1.SlotTime})
	}
	if r := release("t2"); r.Code != http.StatusOK {
		t.Fatalf("release by another ticket: %+v", r)
	}
	if keys := e.slotKeys(t, ten.ID); keys[subjects.SlotKey(ten.ID, ag.ID, r1.SlotTime)].Ticket != "t1" {
		t.Fatalf("another ticket's release removed t1's slot: %v", keys)
	}
	if r := release("t1"); r.Code != http.StatusOK {
		t.Fatalf("release: %+v", r)
	}
	// At once: the very next reserve takes the slot.
	r3 := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, "t3", respT0))
	if r3.Code != http.StatusCreated || !r3.SlotTime.Equal(r1.SlotTime) {
		t.Fatalf("t3 after the release: %+v", r3)
	}
	if r := release("t1"); r.Code != http.StatusOK {
		t.Fatalf("repeated release: %+v", r)
	}
	checkBookings(t, e, ten.ID, []accepted{{"t3", r3.Agent, r3.SlotTime}}, respT0, subjects.Gold)
}

func TestResponderAgentAvailability(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Shifts plc")
	a := e.agentAt(t, ten, respT0)
	b := e.agentAt(t, ten, respT0)
	r := e.responder(t, nil)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 240 }, "two agents")
	e.setStatus(t, ten, a.ID, subjects.AgentUnavailable, respT0)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 120 }, "agent a gone")
	nc := e.nats.Connect(t)
	for i := 0; i < 121; i++ {
		reply := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, fmt.Sprintf("t%d", i), respT0))
		switch {
		case i < 120 && (reply.Code != http.StatusCreated || reply.Agent != b.ID):
			t.Fatalf("reserve %d: %+v, want b", i, reply)
		case i == 120 && reply.Code != http.StatusConflict:
			t.Fatalf("reserve %d with b full and a unavailable: %+v", i, reply)
		}
	}
	// Available again mid-minute: slots from the next whole minute.
	e.setStatus(t, ten, a.ID, subjects.AgentAvailable, time.Date(2030, 5, 6, 10, 30, 20, 0, time.UTC))
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 89 }, "a back from 10:31")
	reply := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, "back", respT0))
	if reply.Code != http.StatusCreated || reply.Agent != a.ID || !reply.SlotTime.Equal(time.Date(2030, 5, 6, 10, 31, 0, 0, time.UTC)) {
		t.Fatalf("after a came back: %+v, want a at 10:31", reply)
	}
}

func TestResponderTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	full := e.account(t, "Full House")
	other := e.account(t, "Other House")
	e.agentAt(t, full, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC))
	e.agentAt(t, other, respT0)
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	if r := mustAsk(t, nc, reserveReq(full.ID, subjects.Gold, "f0", respT0)); r.Code != http.StatusCreated {
		t.Fatalf("full's only slot: %+v", r)
	}
	for i := 1; i < 20; i++ {
		if r := mustAsk(t, nc, reserveReq(full.ID, subjects.Gold, fmt.Sprintf("f%d", i), respT0)); r.Code != http.StatusConflict {
			t.Fatalf("full tenant: %+v", r)
		}
	}
	for i := 0; i < 5; i++ {
		r := mustAsk(t, nc, reserveReq(other.ID, subjects.Gold, fmt.Sprintf("o%d", i), respT0))
		if r.Code != http.StatusCreated || !r.SlotTime.Equal(respT0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("other tenant while the first is full: %+v", r)
		}
	}
	// A request on one tenant's subject for another is refused.
	reply, err := ask(t, nc, subjects.ETA(full.ID), reserveReq(other.ID, subjects.Gold, "x", respT0))
	if err != nil || reply.Code != http.StatusBadRequest || reply.Error != "tenant_mismatch" {
		t.Fatalf("cross-tenant request: %+v %v", reply, err)
	}
	if n := len(e.slotKeys(t, other.ID)); n != 5 {
		t.Fatalf("other tenant has %d keys, want 5", n)
	}
}

func TestResponderRefusesHostileRequests(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	a := e.account(t, "Target")
	b := e.account(t, "Attacker")
	e.agentAt(t, a, respT0)
	e.agentAt(t, b, respT0)
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	good := func() map[string]any {
		return map[string]any{"op": "reserve", "tenant": a.ID, "type": "GOLD", "created_at": respT0, "ticket": "t1"}
	}
	with := func(k string, v any) map[string]any {
		m := good()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name    string
		subject string
		body    any
		code    int
		errCode string
	}{
		{"tenant mismatch", subjects.ETA(a.ID), with("tenant", b.ID), 400, "tenant_mismatch"},
		{"tenant missing", subjects.ETA(a.ID), with("tenant", nil), 400, "tenant_mismatch"},
		{"lower-case type", subjects.ETA(a.ID), with("type", "gold"), 400, "invalid_field"},
		{"unknown type", subjects.ETA(a.ID), with("type", "PLATINUM"), 400, "invalid_field"},
		{"created 6s ahead", subjects.ETA(a.ID), with("created_at", respT0.Add(6*time.Second)), 400, "invalid_field"},
		{"created 6s behind", subjects.ETA(a.ID), with("created_at", respT0.Add(-6*time.Second)), 400, "invalid_field"},
		{"created missing", subjects.ETA(a.ID), with("created_at", nil), 400, "invalid_field"},
		{"bad ticket id", subjects.ETA(a.ID), with("ticket", "T 1"), 400, "invalid_field"},
		{"wildcard ticket id", subjects.ETA(a.ID), with("ticket", "t.>"), 400, "invalid_field"},
		{"unknown op", subjects.ETA(a.ID), with("op", "steal"), 400, "invalid_field"},
		{"unknown field", subjects.ETA(a.ID), with("admin", true), 400, "unknown_field"},
		{"garbage", subjects.ETA(a.ID), []byte("{\"op\":"), 400, "invalid_json"},
		{"not an object", subjects.ETA(a.ID), []byte("[1,2]"), 400, "invalid_json"},
		{"trailing data", subjects.ETA(a.ID), []byte(`{"op":"hold"} {}`), 400, "invalid_json"},
		{"oversized", subjects.ETA(a.ID), []byte(`{"op":"` + strings.Repeat("x", 5000) + `"}`), 400, "body_too_large"},
		{"release inside a minute", subjects.ETA(a.ID), map[string]any{"op": "release", "tenant": a.ID, "ticket": "t1",
			"agent": "a1", "slot_time": respT0.Add(time.Second)}, 400, "invalid_field"},
		{"confirm malformed slot id", subjects.ETA(a.ID), map[string]any{"op": "confirm", "tenant": a.ID, "type": "GOLD",
			"ticket": "t1", "slot_id": "202605061000-a1-short"}, 400, "invalid_field"},
		{"negative agents_rev", subjects.ETA(a.ID), with("agents_rev", -1), 400, "invalid_json"},
		{"string agents_rev", subjects.ETA(a.ID), with("agents_rev", "7"), 400, "invalid_json"},
		{"fractional agents_rev", subjects.ETA(a.ID), with("agents_rev", 1.5), 400, "invalid_json"},
		{"agents_rev on a release", subjects.ETA(a.ID), map[string]any{"op": "release", "tenant": a.ID, "ticket": "t1",
			"agent": "a1", "slot_time": respT0, "agents_rev": 3}, 400, "invalid_field"},
		{"agents_rev on a confirm", subjects.ETA(a.ID), map[string]any{"op": "confirm", "tenant": a.ID, "type": "GOLD",
			"ticket": "t1", "slot_id": subjects.FormatSlotID("a1", respT0, "abcdefghijkl"), "agents_rev": 3}, 400, "invalid_field"},
		{"unknown tenant", subjects.ETA("cnobody"), with("tenant", "cnobody"), 404, "client_not_found"},
	}
	for _, c := range cases {
		reply, err := ask(t, nc, c.subject, c.body)
		if err != nil || reply.Code != c.code || reply.Error != c.errCode {
			t.Errorf("%s: %+v %v, want %d %s", c.name, reply, err, c.code, c.errCode)
		}
	}
	// I7: nothing was written for either tenant.
	for _, ten := range []string{a.ID, b.ID, "cnobody"} {
		if keys := e.slotKeys(t, ten); len(keys) != 0 {
			t.Errorf("tenant %s has keys after refused requests: %v", ten, keys)
		}
	}
	// And the responder still serves a good request.
	if r := mustAsk(t, nc, reserveReq(a.ID, subjects.Gold, "t1", respT0)); r.Code != http.StatusCreated {
		t.Fatalf("good request after hostile ones: %+v", r)
	}
}

func TestResponderSurvivesNATSRestart(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Restart Ltd")
	e.agentAt(t, ten, respT0)
	reg := prometheus.NewRegistry()
	r := e.responder(t, func(c *workers.ResponderConfig) { c.Metrics = reg })
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 120 }, "agent seen")
	nc := e.nats.Connect(t)
	var got []accepted
	for i := 0; i < 10; i++ {
		reply := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, fmt.Sprintf("t%03d", i), respT0))
		if reply.Code != http.StatusCreated {
			t.Fatalf("before restart: %+v", reply)
		}
		got = append(got, accepted{fmt.Sprintf("t%03d", i), reply.Agent, reply.SlotTime})
	}

	e.nats.Restart()
	// The watches are rebuilt (the reconnect starts new ones) and the
	// subscription is back; a harmless request proves the latter.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counter(t, reg, "tms_eta_watch_restarts_total") >= 1
	}, "watches rebuilt after the restart")
	testkit.Eventually(t, 20*time.Second, func() bool {
		reply, err := ask(t, nc, subjects.ETA("cnobody"), subjects.ETARequest{Op: subjects.ETAHold, Tenant: "cnobody",
			Type: subjects.Gold, CreatedAt: respT0})
		return err == nil && reply.Code == http.StatusNotFound
	}, "responder answering after the restart")
	testkit.Eventually(t, 20*time.Second, r.Ready, "responder ready")

	for i := 10; ; i++ {
		ticket := fmt.Sprintf("t%03d", i)
		reply := mustAsk(t, nc, reserveReq(ten.ID, subjects.Gold, ticket, respT0))
		if reply.Code == http.StatusConflict {
			break
		}
		if reply.Code != http.StatusCreated {
			t.Fatalf("after restart: %+v", reply)
		}
		if i == 10 && !reply.SlotTime.Equal(respT0.Add(10*time.Minute)) {
			t.Errorf("first slot after the restart %v, want 10:10 (the rebuilt calendar)", reply.SlotTime)
		}
		got = append(got, accepted{ticket, reply.Agent, reply.SlotTime})
		if i > 200 {
			t.Fatal("no end of accepted tickets")
		}
	}
	if len(got) != 120 {
		t.Fatalf("accepted %d across the restart, want exactly 120", len(got))
	}
	checkBookings(t, e, ten.ID, got, respT0, subjects.Gold)
}
