package workers_test

import (
	"encoding/json"
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
// agent-minutes, each inside its window, ticket ids that name their slot,
// and the busy KV keys are exactly those reservations, each the ticket's
// confirmed record.
func checkBookings(t *testing.T, e *respEnv, tenant string, got []accepted, created time.Time, typ string) {
	t.Helper()
	first, last, _ := calendar.Window(created, typ)
	seen := map[string]string{}
	for _, a := range got {
		if a.slot.Before(first) || a.slot.After(last) {
			t.Errorf("I3: ticket %s got slot %v outside [%v, %v]", a.ticket, a.slot, first, last)
		}
		if ag, m, _, err := subjects.ParseTicketID(a.ticket); err != nil || ag != a.agent || !m.Equal(a.slot) {
			t.Errorf("ticket id %q does not name %s at %v: %v", a.ticket, a.agent, a.slot, err)
		}
		key := subjects.SlotKey(tenant, a.agent, a.slot)
		if other, dup := seen[key]; dup {
			t.Errorf("I2: %s given to %s and %s", key, other, a.ticket)
		}
		seen[key] = a.ticket
	}
	keys := e.busyKeys(t, tenant)
	if len(keys) != len(seen) {
		t.Errorf("%d busy slot keys in KV, want %d (one per accepted ticket)", len(keys), len(seen))
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
				req := newReserve(ten.ID, subjects.Gold, respT0)
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
						got = append(got, accepted{reply.Ticket, reply.Agent, reply.SlotTime})
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

	if reply := mustAsk(t, nc, newReserve(empty.ID, subjects.Gold, respT0)); reply.Code != http.StatusConflict ||
		reply.Error != "sla_unavailable" {
		t.Fatalf("no agents: %+v", reply)
	}
	if keys := e.slotKeys(t, empty.ID); len(keys) != 0 {
		t.Fatalf("I4: a 409 left keys %v", keys)
	}
	r1 := mustAsk(t, nc, newReserve(one.ID, subjects.Gold, respT0))
	if r1.Code != http.StatusCreated || !r1.SlotTime.Equal(time.Date(2030, 5, 6, 11, 59, 0, 0, time.UTC)) {
		t.Fatalf("first: %+v", r1)
	}
	for i := 0; i < 3; i++ {
		if reply := mustAsk(t, nc, newReserve(one.ID, subjects.Gold, respT0)); reply.Code != http.StatusConflict {
			t.Fatalf("late%d: %+v", i, reply)
		}
	}
	checkBookings(t, e, one.ID, []accepted{{r1.Ticket, r1.Agent, r1.SlotTime}}, respT0, subjects.Gold)
}

// holdReq is a hold as validate_eta asks it, created at the env's clock.
func (e *respEnv) holdReq(tenant, typ string) subjects.ETARequest {
	return subjects.ETARequest{Op: subjects.ETAHold, Tenant: tenant, Type: typ, CreatedAt: e.clock.Now()}
}

func confirmReq(tenant, typ, slotID, nonce string) subjects.ETARequest {
	return subjects.ETARequest{Op: subjects.ETAConfirm, Tenant: tenant, Type: typ, SlotID: slotID, Nonce: nonce}
}

// TestResponderHolds: a hold is busy until its expiry, then free without
// any write (I5): the next hold on the minute replaces it by an update
// against its revision, a confirm of the expired hold is 410; a confirm
// of a live hold replaces it with the ticket, against the hold's
// revision; and no record carries a per-key TTL.
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
	const ttl = 30 * time.Second
	r := e.responder(t, func(c *workers.ResponderConfig) { c.HoldTTL = ttl })
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 2 }, "agents seen")
	nc := e.nats.Connect(t)
	keyA, keyB := subjects.SlotKey(ten.ID, a.ID, slot), subjects.SlotKey(ten.ID, b.ID, slot)
	hold := func() subjects.ETAReply { return mustAsk(t, nc, e.holdReq(ten.ID, subjects.Gold)) }
	confirm := func(slotID, nonce string) subjects.ETAReply {
		return mustAsk(t, nc, confirmReq(ten.ID, subjects.Gold, slotID, nonce))
	}

	h1 := hold()
	if h1.Code != http.StatusOK || h1.Agent != a.ID || !h1.SlotTime.Equal(slot) || h1.HoldExpiresAt == nil ||
		!h1.HoldExpiresAt.Equal(respT0.Add(ttl)) {
		t.Fatalf("hold 1: %+v", h1)
	}
	if ag, m, _, err := subjects.ParseSlotID(h1.SlotID); err != nil || ag != a.ID || !m.Equal(slot) {
		t.Fatalf("slot id %q: %v", h1.SlotID, err)
	}
	if rec, rev, ok := e.record(t, ten.ID, keyA); !ok || rec.State != subjects.SlotHeld || rev != h1.Revision ||
		rec.Prev != 0 || rec.Tenant != ten.ID || rec.Agent != a.ID || !rec.SlotTime.Equal(slot) ||
		!rec.CreatedAt.Equal(respT0) || rec.Type != subjects.Gold || !rec.HoldExpiresAt.Equal(*h1.HoldExpiresAt) {
		t.Fatalf("hold 1's record at %d: %+v (present %v)", rev, rec, ok)
	}
	h2 := hold()
	if h2.Code != http.StatusOK || h2.Agent != b.ID {
		t.Fatalf("hold 2: %+v", h2)
	}
	// Busy until the very instant of expiry.
	e.clock.Advance(ttl - time.Millisecond)
	if h := hold(); h.Code != http.StatusConflict {
		t.Fatalf("hold 3 with both slots held: %+v", h)
	}

	// I5: at its expiry the hold ends without a write; a confirm after
	// that is 410 and writes nothing.
	e.clock.Advance(time.Millisecond)
	seq := e.lastSlotSeq(t, ten.ID)
	if c := confirm(h1.SlotID, subjects.NewTicketNonce()); c.Code != http.StatusGone || c.Error != "hold_expired" {
		t.Fatalf("confirm after expiry: %+v", c)
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("expiry or the refused confirm wrote: stream at %d, was %d", got, seq)
	}
	// The expired hold's minute is taken again by an update against the
	// hold's revision.
	h3 := hold()
	if h3.Code != http.StatusOK || h3.Agent != a.ID || !h3.SlotTime.Equal(slot) {
		t.Fatalf("hold over the expired one: %+v", h3)
	}
	if rec, rev, _ := e.record(t, ten.ID, keyA); rec.Prev != h1.Revision || rev != h3.Revision {
		t.Fatalf("hold 3's record at %d replaces %d, want %d", rev, rec.Prev, h1.Revision)
	}
	nonce := subjects.NewTicketNonce()
	c3 := confirm(h3.SlotID, nonce)
	wantID, _ := subjects.NewSlotTicketID(a.ID, slot, nonce)
	if c3.Code != http.StatusOK || c3.Ticket != wantID || c3.Agent != a.ID || !c3.SlotTime.Equal(slot) ||
		!c3.CreatedAt.Equal(respT0.Add(ttl)) {
		t.Fatalf("confirm: %+v, want ticket %s", c3, wantID)
	}
	rec, rev, _ := e.record(t, ten.ID, keyA)
	if rec.State != subjects.SlotConfirmed || rec.Ticket != wantID || rec.Prev != h3.Revision || rev != c3.Revision ||
		!rec.Deadline.Equal(c3.CreatedAt.Add(2*time.Hour)) || rec.HoldExpiresAt != nil {
		t.Fatalf("confirmed record at %d: %+v", rev, rec)
	}
	if again := confirm(h3.SlotID, nonce); again.Code != http.StatusOK || again.Revision != c3.Revision || again.Ticket != wantID {
		t.Fatalf("repeated confirm: %+v, want the same answer %+v", again, c3)
	}
	if other := confirm(h3.SlotID, subjects.NewTicketNonce()); other.Code != http.StatusGone {
		t.Fatalf("confirm of a confirmed slot for another ticket: %+v", other)
	}
	// No per-key TTL on any record: nothing expires or deletes by itself.
	st, err := e.js.Stream(testkit.Context(t, 10*time.Second), subjects.SlotStream(subjects.SlotShard(ten.ID, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{keyA, keyB} {
		raw, err := st.GetLastMsgForSubject(testkit.Context(t, 10*time.Second), subjects.SlotSubject(ten.ID,
			strings.Split(key, ".")[1], slot, subjects.DefaultSlotShards))
		if err != nil {
			t.Fatal(err)
		}
		if ttl := raw.Header.Get(jetstream.MsgTTLHeader); ttl != "" {
			t.Fatalf("record of %s carries Nats-TTL %q", key, ttl)
		}
	}
	// The confirmed ticket outlives a later hold's expiry.
	h4 := hold()
	if h4.Code != http.StatusOK || h4.Agent != b.ID {
		t.Fatalf("hold over b's expired hold: %+v", h4)
	}
	e.clock.Advance(ttl)
	keys := e.busyKeys(t, ten.ID)
	if rec, ok := keys[keyA]; !ok || rec.State != subjects.SlotConfirmed || rec.Ticket != wantID || len(keys) != 1 {
		t.Fatalf("busy keys %v, want only the confirmed one", keys)
	}
}

// TestResponderHoldExpiresInEveryCalendar: a hold made through one
// responder ends in another responder's calendar too, by the clock alone
// (I5 without a write), and that responder takes the minute by an update
// against the hold's revision.
func TestResponderHoldExpiresInEveryCalendar(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Two Calendars")
	ag := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC)) // one slot: 11:59
	r1 := e.responder(t, nil)
	r2 := e.responder(t, nil)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	for _, r := range []*workers.Responder{r1, r2} {
		testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 1 }, "agent seen")
	}
	ctx := testkit.Context(t, 30*time.Second)
	handle := func(r *workers.Responder, req subjects.ETARequest) subjects.ETAReply {
		data, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return r.Handle(ctx, subjects.ETA(ten.ID), data)
	}
	h := handle(r1, e.holdReq(ten.ID, subjects.Gold))
	if h.Code != http.StatusOK {
		t.Fatalf("hold: %+v", h)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return r2.FreeSlots(ten.ID, first, last) == 0 },
		"the other responder sees the hold")
	if got := handle(r2, newReserve(ten.ID, subjects.Gold, respT0)); got.Code != http.StatusConflict {
		t.Fatalf("reserve through the other responder while held: %+v", got)
	}
	e.clock.Set(*h.HoldExpiresAt)
	if n := r2.FreeSlots(ten.ID, first, last); n != 1 {
		t.Fatalf("the other responder has %d free slots at the hold's expiry, want 1", n)
	}
	got := handle(r2, newReserve(ten.ID, subjects.Gold, respT0.Add(30*time.Second)))
	if got.Code != http.StatusCreated || got.Agent != ag.ID {
		t.Fatalf("reserve after the hold expired: %+v", got)
	}
	if rec, _, _ := e.record(t, ten.ID, subjects.SlotKey(ten.ID, ag.ID, got.SlotTime)); rec.Prev != h.Revision {
		t.Fatalf("the ticket replaced revision %d, want the hold's %d", rec.Prev, h.Revision)
	}
}

func TestResponderConfirmTypeMismatch(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Types Ltd")
	e.agentAt(t, ten, time.Date(2030, 5, 6, 13, 0, 0, 0, time.UTC)) // beyond GOLD, inside BRONZE
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	h := mustAsk(t, nc, e.holdReq(ten.ID, subjects.Bronze))
	if h.Code != http.StatusOK || !h.SlotTime.Equal(time.Date(2030, 5, 6, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("hold: %+v", h)
	}
	c := mustAsk(t, nc, confirmReq(ten.ID, subjects.Gold, h.SlotID, subjects.NewTicketNonce()))
	if c.Code != http.StatusConflict || c.Error != "type_mismatch" {
		t.Fatalf("GOLD confirm of a BRONZE-only slot: %+v", c)
	}
	bad := mustAsk(t, nc, confirmReq(ten.ID, subjects.Gold, "nope", subjects.NewTicketNonce()))
	if bad.Code != http.StatusBadRequest || bad.Error != "invalid_field" {
		t.Fatalf("malformed slot id: %+v", bad)
	}
	// The hold stayed: it can still be confirmed with a type that fits.
	c = mustAsk(t, nc, confirmReq(ten.ID, subjects.Bronze, h.SlotID, subjects.NewTicketNonce()))
	if c.Code != http.StatusOK {
		t.Fatalf("BRONZE confirm: %+v", c)
	}
}

// TestResponderReleaseFreesAtOnce: a release (cancel_ticket) writes the
// ticket's released record against its revision, and the very next
// reserve takes the minute by an update against the release; releasing
// another ticket of the minute, or the same one again, writes nothing.
func TestResponderReleaseFreesAtOnce(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Cancel Co")
	ag := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC))
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	r1 := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
	if r1.Code != http.StatusCreated {
		t.Fatalf("t1: %+v", r1)
	}
	if r := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0)); r.Code != http.StatusConflict {
		t.Fatalf("t2: %+v", r)
	}
	key := subjects.SlotKey(ten.ID, ag.ID, r1.SlotTime)
	other := r1
	other.Ticket, _ = subjects.NewSlotTicketID(ag.ID, r1.SlotTime, subjects.NewTicketNonce())
	seq := e.lastSlotSeq(t, ten.ID)
	if r := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, respT0, other)); r.Code != http.StatusOK {
		t.Fatalf("release of another ticket of the minute: %+v", r)
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("another ticket's release wrote (stream %d -> %d)", seq, got)
	}
	rel := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, respT0, r1))
	if rel.Code != http.StatusOK {
		t.Fatalf("release: %+v", rel)
	}
	rec, rev, _ := e.record(t, ten.ID, key)
	if rec.State != subjects.SlotReleased || rec.Ticket != r1.Ticket || rec.Prev != r1.Revision || rev != rel.Revision ||
		rec.CancelledAt == nil || !rec.CancelledAt.Equal(respT0) || !rec.CreatedAt.Equal(respT0) {
		t.Fatalf("released record at %d: %+v", rev, rec)
	}
	// At once: the very next reserve takes the slot.
	r3 := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
	if r3.Code != http.StatusCreated || !r3.SlotTime.Equal(r1.SlotTime) {
		t.Fatalf("t3 after the release: %+v", r3)
	}
	if rec, _, _ := e.record(t, ten.ID, key); rec.Prev != rel.Revision || rec.Ticket != r3.Ticket {
		t.Fatalf("t3's record %+v, want it to replace the release at %d", rec, rel.Revision)
	}
	seq = e.lastSlotSeq(t, ten.ID)
	if r := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, respT0, r1)); r.Code != http.StatusOK {
		t.Fatalf("repeated release: %+v", r)
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("a repeated release wrote (stream %d -> %d)", seq, got)
	}
	checkBookings(t, e, ten.ID, []accepted{{r3.Ticket, r3.Agent, r3.SlotTime}}, respT0, subjects.Gold)
}

// TestResponderReleaseOfAnAgedOutTicket: a ticket whose key has no record
// (aged out; the ingress found it in Postgres) gets a released record as
// the key's first, so that the allocators cancel the row; a release whose
// slot is outside its type's window is refused and writes nothing.
func TestResponderReleaseOfAnAgedOutTicket(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Old Tickets")
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	slot := respT0.Add(-3 * time.Hour)
	created := slot.Add(-10 * time.Minute)
	old := subjects.ETAReply{Agent: "aold", SlotTime: slot}
	old.Ticket, _ = subjects.NewSlotTicketID(old.Agent, slot, subjects.NewTicketNonce())
	if r := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, created.Add(-3*time.Hour), old)); r.Code != http.StatusBadRequest {
		t.Fatalf("release with a slot outside the type's window: %+v, want 400", r)
	}
	if keys := e.slotKeys(t, ten.ID); len(keys) != 0 {
		t.Fatalf("a refused release wrote %v", keys)
	}
	if r := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, created, old)); r.Code != http.StatusOK {
		t.Fatalf("release: %+v", r)
	}
	rec, _, ok := e.record(t, ten.ID, subjects.SlotKey(ten.ID, old.Agent, slot))
	if !ok || rec.State != subjects.SlotReleased || rec.Ticket != old.Ticket || rec.Prev != 0 || !rec.CreatedAt.Equal(created) {
		t.Fatalf("record %+v (present %v), want the ticket's release as the key's first", rec, ok)
	}
}

// TestResponderTakeover: a reserve with Takeover answers the tenant's
// ticket with its nonce, written before, and writes nothing; one whose
// nonce has no ticket reserves as usual.
func TestResponderTakeover(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Retry Ltd")
	e.agentAt(t, ten, respT0)
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	var first subjects.ETAReply
	req := newReserve(ten.ID, subjects.Silver, respT0)
	for i := range 3 { // the ticket among others
		r := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
		if r.Code != http.StatusCreated {
			t.Fatalf("reserve %d: %+v", i, r)
		}
		if i == 1 {
			if first = mustAsk(t, nc, req); first.Code != http.StatusCreated {
				t.Fatalf("the twin's reserve: %+v", first)
			}
		}
	}
	seq := e.lastSlotSeq(t, ten.ID)
	// The retry comes a little later, with the same nonce.
	retry := req
	retry.Takeover, retry.CreatedAt = true, respT0.Add(2*time.Second)
	got := mustAsk(t, nc, retry)
	if got.Code != http.StatusCreated || got.Ticket != first.Ticket || got.Agent != first.Agent ||
		!got.SlotTime.Equal(first.SlotTime) || !got.CreatedAt.Equal(respT0) || got.Revision != first.Revision {
		t.Fatalf("takeover: %+v, want the twin's %+v", got, first)
	}
	if now := e.lastSlotSeq(t, ten.ID); now != seq {
		t.Fatalf("a takeover that found its ticket wrote (stream %d -> %d)", seq, now)
	}
	// No ticket with that nonce: an ordinary reserve.
	fresh := newReserve(ten.ID, subjects.Gold, respT0)
	fresh.Takeover = true
	if r := mustAsk(t, nc, fresh); r.Code != http.StatusCreated || r.Ticket == first.Ticket {
		t.Fatalf("takeover without a ticket: %+v", r)
	}
	// A cancelled ticket is still the nonce's ticket.
	if r := mustAsk(t, nc, releaseReq(ten.ID, subjects.Silver, respT0, first)); r.Code != http.StatusOK {
		t.Fatalf("release: %+v", r)
	}
	if r := mustAsk(t, nc, retry); r.Code != http.StatusCreated || r.Ticket != first.Ticket {
		t.Fatalf("takeover of a cancelled ticket: %+v, want %s", r, first.Ticket)
	}
	// A ticket released by the release of its nonce (its asker never
	// learnt the outcome, so no client was told of it): the nonce is
	// spent, and the takeover is told so instead of being answered it.
	abandoned := newReserve(ten.ID, subjects.Gold, respT0)
	if r := mustAsk(t, nc, abandoned); r.Code != http.StatusCreated {
		t.Fatalf("reserve: %+v", r)
	}
	byNonce := subjects.ETARequest{Op: subjects.ETARelease, Tenant: ten.ID, Nonce: abandoned.Nonce}
	if r := mustAsk(t, nc, byNonce); r.Code != http.StatusOK || r.Ticket == "" {
		t.Fatalf("release by nonce: %+v", r)
	}
	abandoned.Takeover = true
	if r := mustAsk(t, nc, abandoned); r.Error != subjects.ETACodeNonceReleased {
		t.Fatalf("takeover of an abandoned ticket: %+v, want %s", r, subjects.ETACodeNonceReleased)
	}
}

// TestResponderReleaseByNonce: a release with only a nonce (an ingress
// whose reserve got no reply) releases the tenant's ticket with that
// nonce, and is a success that writes nothing when there is none.
func TestResponderReleaseByNonce(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Lost Replies")
	ag := e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC)) // one slot
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	seq := e.lastSlotSeq(t, ten.ID)
	byNonce := func(nonce string) subjects.ETAReply {
		return mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETARelease, Tenant: ten.ID, Nonce: nonce})
	}
	if r := byNonce(subjects.NewTicketNonce()); r.Code != http.StatusOK {
		t.Fatalf("release of a nonce without a ticket: %+v", r)
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("a release that found nothing wrote (stream %d -> %d)", seq, got)
	}
	req := newReserve(ten.ID, subjects.Gold, respT0)
	r1 := mustAsk(t, nc, req)
	if r1.Code != http.StatusCreated {
		t.Fatalf("reserve: %+v", r1)
	}
	rel := byNonce(req.Nonce)
	if rel.Code != http.StatusOK || rel.Ticket != r1.Ticket {
		t.Fatalf("release by nonce: %+v", rel)
	}
	rec, _, _ := e.record(t, ten.ID, subjects.SlotKey(ten.ID, ag.ID, r1.SlotTime))
	if rec.State != subjects.SlotReleased || rec.Ticket != r1.Ticket || rec.Prev != r1.Revision {
		t.Fatalf("record after the release by nonce: %+v", rec)
	}
	// The minute is free at once, and a repeat writes nothing.
	r2 := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
	if r2.Code != http.StatusCreated || !r2.SlotTime.Equal(r1.SlotTime) {
		t.Fatalf("reserve after the release: %+v", r2)
	}
	seq = e.lastSlotSeq(t, ten.ID)
	if r := byNonce(req.Nonce); r.Code != http.StatusOK {
		t.Fatalf("repeated release by nonce: %+v", r)
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("a repeated release by nonce wrote (stream %d -> %d)", seq, got)
	}
	checkBookings(t, e, ten.ID, []accepted{{r2.Ticket, r2.Agent, r2.SlotTime}}, respT0, subjects.Gold)
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
		reply := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
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
	reply := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
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
	if r := mustAsk(t, nc, newReserve(full.ID, subjects.Gold, respT0)); r.Code != http.StatusCreated {
		t.Fatalf("full's only slot: %+v", r)
	}
	for i := 1; i < 20; i++ {
		if r := mustAsk(t, nc, newReserve(full.ID, subjects.Gold, respT0)); r.Code != http.StatusConflict {
			t.Fatalf("full tenant: %+v", r)
		}
	}
	for i := 0; i < 5; i++ {
		r := mustAsk(t, nc, newReserve(other.ID, subjects.Gold, respT0))
		if r.Code != http.StatusCreated || !r.SlotTime.Equal(respT0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("other tenant while the first is full: %+v", r)
		}
	}
	// A request on one tenant's subject for another is refused.
	reply, err := ask(t, nc, subjects.ETA(full.ID), newReserve(other.ID, subjects.Gold, respT0))
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
	nonce := subjects.NewTicketNonce()
	good := func() map[string]any {
		return map[string]any{"op": "reserve", "tenant": a.ID, "type": "GOLD", "created_at": respT0, "nonce": nonce}
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
	ticket, _ := subjects.NewSlotTicketID("a1", respT0, nonce)
	release := func(k string, v any) map[string]any {
		m := map[string]any{"op": "release", "tenant": a.ID, "ticket": ticket, "type": "GOLD", "created_at": respT0,
			"agent": "a1", "slot_time": respT0}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	confirm := func(k string, v any) map[string]any {
		m := map[string]any{"op": "confirm", "tenant": a.ID, "type": "GOLD", "nonce": nonce,
			"slot_id": subjects.FormatSlotID("a1", respT0, "abcdefghijkl")}
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
		{"reserve without a nonce", subjects.ETA(a.ID), with("nonce", nil), 400, "invalid_field"},
		{"short nonce", subjects.ETA(a.ID), with("nonce", "abc"), 400, "invalid_field"},
		{"upper-case nonce", subjects.ETA(a.ID), with("nonce", strings.ToUpper(nonce)), 400, "invalid_field"},
		{"wildcard nonce", subjects.ETA(a.ID), with("nonce", "abcdefghijklmn.>"), 400, "invalid_field"},
		{"reserve naming a ticket", subjects.ETA(a.ID), with("ticket", ticket), 400, "invalid_field"},
		{"takeover on a hold", subjects.ETA(a.ID), map[string]any{"op": "hold", "tenant": a.ID, "type": "GOLD",
			"created_at": respT0, "takeover": true}, 400, "invalid_field"},
		{"unknown op", subjects.ETA(a.ID), with("op", "steal"), 400, "invalid_field"},
		{"unknown field", subjects.ETA(a.ID), with("admin", true), 400, "unknown_field"},
		{"garbage", subjects.ETA(a.ID), []byte("{\"op\":"), 400, "invalid_json"},
		{"not an object", subjects.ETA(a.ID), []byte("[1,2]"), 400, "invalid_json"},
		{"trailing data", subjects.ETA(a.ID), []byte(`{"op":"hold"} {}`), 400, "invalid_json"},
		{"oversized", subjects.ETA(a.ID), []byte(`{"op":"` + strings.Repeat("x", subjects.MaxSlotRecordBytes+1) + `"}`), 400, "body_too_large"},
		{"release inside a minute", subjects.ETA(a.ID), release("slot_time", respT0.Add(time.Second)), 400, "invalid_field"},
		{"release of another minute", subjects.ETA(a.ID), release("slot_time", respT0.Add(time.Minute)), 400, "invalid_field"},
		{"release of another agent", subjects.ETA(a.ID), release("agent", "a2"), 400, "invalid_field"},
		{"release of an old ticket id", subjects.ETA(a.ID), release("ticket", "tabcdefghijklmnopqrst"), 400, "invalid_field"},
		{"release without a type", subjects.ETA(a.ID), release("type", nil), 400, "invalid_field"},
		{"release without created_at", subjects.ETA(a.ID), release("created_at", nil), 400, "invalid_field"},
		{"release without ticket or nonce", subjects.ETA(a.ID), release("ticket", nil), 400, "invalid_field"},
		{"release with a bad nonce", subjects.ETA(a.ID), map[string]any{"op": "release", "tenant": a.ID,
			"nonce": "x"}, 400, "invalid_field"},
		{"confirm malformed slot id", subjects.ETA(a.ID), confirm("slot_id", "202605061000-a1-short"), 400, "invalid_field"},
		{"confirm without a nonce", subjects.ETA(a.ID), confirm("nonce", nil), 400, "invalid_field"},
		{"negative agents_rev", subjects.ETA(a.ID), with("agents_rev", -1), 400, "invalid_json"},
		{"string agents_rev", subjects.ETA(a.ID), with("agents_rev", "7"), 400, "invalid_json"},
		{"fractional agents_rev", subjects.ETA(a.ID), with("agents_rev", 1.5), 400, "invalid_json"},
		{"agents_rev on a release", subjects.ETA(a.ID), release("agents_rev", 3), 400, "invalid_field"},
		{"agents_rev on a confirm", subjects.ETA(a.ID), confirm("agents_rev", 3), 400, "invalid_field"},
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
	if r := mustAsk(t, nc, newReserve(a.ID, subjects.Gold, respT0)); r.Code != http.StatusCreated {
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
		reply := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
		if reply.Code != http.StatusCreated {
			t.Fatalf("before restart: %+v", reply)
		}
		got = append(got, accepted{reply.Ticket, reply.Agent, reply.SlotTime})
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
		reply := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
		if reply.Code == http.StatusConflict {
			break
		}
		if reply.Code != http.StatusCreated {
			t.Fatalf("after restart: %+v", reply)
		}
		if i == 10 && !reply.SlotTime.Equal(respT0.Add(10*time.Minute)) {
			t.Errorf("first slot after the restart %v, want 10:10 (the rebuilt calendar)", reply.SlotTime)
		}
		got = append(got, accepted{reply.Ticket, reply.Agent, reply.SlotTime})
		if i > 200 {
			t.Fatal("no end of accepted tickets")
		}
	}
	if len(got) != 120 {
		t.Fatalf("accepted %d across the restart, want exactly 120", len(got))
	}
	checkBookings(t, e, ten.ID, got, respT0, subjects.Gold)
}

// TestResponderRelearnsAMissedRecord: a calendar indexes a range of
// minutes, and a record written beyond it is not in the calendar when the
// range later moves over it. A create there loses; the responder then
// reads the key, and a released record's minute is taken by an update
// against its revision instead of being lost to the tenant.
func TestResponderRelearnsAMissedRecord(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Far Future")
	r := e.responder(t, nil)
	r.FreeSlots(ten.ID, respT0, respT0) // the tenant's calendar, indexed around respT0
	far := time.Date(2030, 5, 7, 2, 30, 0, 0, time.UTC)
	ag := e.agentAt(t, ten, far.Add(-30*time.Second))
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, far, far) == 1 }, "agent seen")

	// A released ticket at 02:30 next day, written while the calendar
	// indexes only up to about 02:04, then a record the calendar does
	// index: once that one is in, the first has gone by.
	kv := e.slotKV(t, ten.ID)
	ctx := testkit.Context(t, 10*time.Second)
	put := func(minute, created time.Time) uint64 {
		id, err := subjects.NewSlotTicketID(ag.ID, minute, subjects.NewTicketNonce())
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(subjects.ReleasedRecord(subjects.TicketEvent{Event: subjects.TicketCreated,
			Tenant: ten.ID, Ticket: id, Type: subjects.Bronze, Agent: ag.ID, SlotTime: minute, CreatedAt: created,
			Deadline: created.Add(8 * time.Hour)}, created, 0))
		if err != nil {
			t.Fatal(err)
		}
		rev, err := kv.Create(ctx, subjects.SlotKey(ten.ID, ag.ID, minute), data)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	farRev := put(far, far.Add(-time.Hour))
	nearRev := put(respT0, respT0)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.SlotRev(ten.ID, ag.ID, respT0) == nearRev },
		"the indexed record in the calendar")
	if got := r.SlotRev(ten.ID, ag.ID, far); got != 0 {
		t.Fatalf("the record beyond the indexed minutes is in the calendar at %d: the test shows nothing", got)
	}

	// Hours later a BRONZE window reaches 02:30, the agent's only minute.
	e.clock.Set(time.Date(2030, 5, 6, 18, 31, 0, 0, time.UTC))
	got := mustAsk(t, e.nats.Connect(t), newReserve(ten.ID, subjects.Bronze, e.clock.Now()))
	if got.Code != http.StatusCreated || !got.SlotTime.Equal(far) {
		t.Fatalf("reserve over the missed release: %+v, want 201 at %v", got, far)
	}
	if rec, _, _ := e.record(t, ten.ID, subjects.SlotKey(ten.ID, ag.ID, far)); rec.Prev != farRev {
		t.Fatalf("the ticket replaced revision %d, want the missed release's %d", rec.Prev, farRev)
	}
}

// TestResponderRefusesPastItsAskersDeadline: a request that reaches the
// responder after the deadline its asker gave (it waited in a paused or
// overloaded responder while the asker gave up) is answered unavailable
// and writes nothing (I4: the asker answered 503, so no ticket may come
// of it); the same request within its deadline admits as usual.
func TestResponderRefusesPastItsAskersDeadline(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Late Askers")
	e.agentAt(t, ten, time.Date(2030, 5, 6, 11, 58, 30, 0, time.UTC))
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	seq := e.lastSlotSeq(t, ten.ID)
	late := newReserve(ten.ID, subjects.Gold, respT0)
	late.Deadline = e.clock.Now().Add(-time.Millisecond)
	hold := subjects.ETARequest{Op: subjects.ETAHold, Tenant: ten.ID, Type: subjects.Gold, CreatedAt: respT0,
		Deadline: late.Deadline}
	for _, req := range []subjects.ETARequest{late, hold} {
		if r := mustAsk(t, nc, req); r.Error != subjects.ETACodeUnavailable {
			t.Fatalf("%s past its deadline: %+v, want %s", req.Op, r, subjects.ETACodeUnavailable)
		}
	}
	if got := e.lastSlotSeq(t, ten.ID); got != seq {
		t.Fatalf("requests past their deadline wrote (stream %d -> %d)", seq, got)
	}
	late.Deadline = e.clock.Now().Add(2 * time.Second)
	if r := mustAsk(t, nc, late); r.Code != http.StatusCreated {
		t.Fatalf("the reserve within its deadline: %+v", r)
	}
}
