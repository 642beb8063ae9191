package workers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
	"tms/workers/calendar"
)

// planState is a tenant's slot records as of one stream sequence: every
// record up to it replayed in order, so that it is one consistent instant
// (a batch is in it whole or not at all), unlike reading key after key.
type planState struct {
	seq  uint64
	keys map[string]subjects.SlotRecord
}

// readPlan replays tenant's slot records up to the stream's last
// sequence (the only tenant of the env's server that writes).
func (e *respEnv) readPlan(t *testing.T, tenant string) planState {
	t.Helper()
	p, err := e.replayPlan(t, tenant)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *respEnv) replayPlan(t *testing.T, tenant string) (planState, error) {
	ctx := testkit.Context(t, 30*time.Second)
	shard := subjects.SlotShard(tenant, subjects.DefaultSlotShards)
	st, err := e.js.Stream(ctx, subjects.SlotStream(shard))
	if err != nil {
		return planState{}, err
	}
	// The instant replayed is the tenant's last record as a get reads
	// it: the server isolates gets from an atomic batch being stored
	// (the whole batch or none of it), whereas the stream's info may
	// report a last sequence in the middle of one (nats-server stores a
	// batch's messages one by one; info takes no isolation lock), which
	// would show a moved ticket at its new minute and still at its old.
	prefix := "$KV." + subjects.SlotBucket(shard) + "."
	last, err := st.GetLastMsgForSubject(ctx, prefix+subjects.TenantSlots(tenant))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return planState{keys: map[string]subjects.SlotRecord{}}, nil
	}
	if err != nil {
		return planState{}, err
	}
	out := planState{seq: last.Sequence, keys: map[string]subjects.SlotRecord{}}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + subjects.TenantSlots(tenant)}})
	if err != nil {
		return planState{}, err
	}
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return planState{}, fmt.Errorf("replaying the slot records: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return planState{}, err
		}
		if md.Sequence.Stream > out.seq {
			return out, nil
		}
		key := msg.Subject()[len(prefix):]
		rec, err := subjects.DecodeSlotRecord(key, msg.Data(), subjects.CheckWritable)
		if err != nil {
			return planState{}, fmt.Errorf("record %d of %s: %w", md.Sequence.Stream, key, err)
		}
		out.keys[key] = rec
		if md.Sequence.Stream == out.seq || md.NumPending == 0 {
			return out, nil
		}
	}
}

// checkPlan proves I2 and I3 on one consistent state: every live ticket
// holds exactly one agent-minute (a ticket in two keys would be a move
// seen half done) inside its own window. It returns the live tickets by
// id.
func checkPlan(t *testing.T, p planState) map[string]subjects.SlotRecord {
	t.Helper()
	live := map[string]subjects.SlotRecord{}
	for key, rec := range p.keys {
		if rec.State != subjects.SlotConfirmed {
			continue
		}
		if other, dup := live[rec.Ticket]; dup {
			t.Errorf("at sequence %d ticket %s holds %s/%v and %s/%v", p.seq, rec.Ticket, other.Agent,
				other.SlotTime, rec.Agent, rec.SlotTime)
		}
		live[rec.Ticket] = rec
		first, last, _ := calendar.Window(rec.CreatedAt, rec.Type)
		if rec.SlotTime.Before(first) || rec.SlotTime.After(last) {
			t.Errorf("I3 at sequence %d: %s ticket %s in %s outside [%v, %v]", p.seq, rec.Type, rec.Ticket, key, first, last)
		}
	}
	return live
}

// plannedTenant opens an account with agents available since respT0 and
// starts a responder (registering its metrics in reg, if any) that sees
// them all.
func (e *respEnv) plannedTenant(t *testing.T, name string, agents int, reg *prometheus.Registry) (tenants.Tenant, []tenants.Agent, *workers.Responder) {
	t.Helper()
	ten := e.account(t, name)
	var as []tenants.Agent
	for range agents {
		as = append(as, e.agentAt(t, ten, respT0))
	}
	return ten, as, e.plannedResponder(t, ten.ID, agents, reg)
}

// plannedResponder starts a responder that sees the tenant's agents.
func (e *respEnv) plannedResponder(t *testing.T, tenant string, agents int, reg *prometheus.Registry) *workers.Responder {
	t.Helper()
	r := e.responder(t, func(c *workers.ResponderConfig) {
		if reg != nil {
			c.Metrics = reg
		}
	})
	first, last, _ := calendar.Window(respT0, subjects.Bronze)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(tenant, first, last) == 480*agents }, "the agents are seen")
	return r
}

// TestResponderMovesTicketsToAdmit is the example on one agent:
// 120 BRONZE fill the first two hours, then GOLD tickets are admitted by
// moving BRONZE ones later inside their 8 h windows, one move each,
// until only the frozen horizon's BRONZE tickets are left in the GOLD
// window. A refused GOLD says which types still fit.
func TestResponderMovesTicketsToAdmit(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	reg := prometheus.NewRegistry()
	ten, _, _ := e.plannedTenant(t, "Mover Corp", 1, reg)
	nc := e.nats.Connect(t)
	for i := range 120 {
		if rep := mustAsk(t, nc, newReserve(ten.ID, subjects.Bronze, respT0)); rep.Code != subjects.ETACreated || rep.Moves != 0 {
			t.Fatalf("BRONZE %d: %+v, want created without moves", i, rep)
		}
	}
	const frozen = 5 // the default horizon, minutes
	gold := map[string]subjects.ETAReply{}
	for i := range 120 - frozen {
		rep := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
		if rep.Code != subjects.ETACreated || rep.Moves != 1 {
			t.Fatalf("GOLD %d: %+v, want created with one move", i, rep)
		}
		gold[rep.Ticket] = rep
	}
	rep := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
	if rep.Error != subjects.ETACodeNoSlot || fmt.Sprint(rep.Fits) != "[SILVER BRONZE]" {
		t.Fatalf("GOLD past the frozen horizon's BRONZE tickets: %+v, want sla_unavailable fitting [SILVER BRONZE]", rep)
	}
	// I4 with moves possible: the refusal claimed, moved and wrote nothing.
	if seq := e.lastSlotSeq(t, ten.ID); seq != 120+2*(120-frozen) {
		t.Errorf("slot stream at %d after the refusal, want %d (120 creates, then a batch of two per GOLD)", seq, 120+2*(120-frozen))
	}

	live := checkPlan(t, e.readPlan(t, ten.ID))
	var bronze int
	for id, rec := range live {
		switch rec.Type {
		case subjects.Gold:
			g, ok := gold[id]
			if !ok || g.Agent != rec.Agent || !g.SlotTime.Equal(rec.SlotTime) {
				t.Errorf("GOLD %s at %s/%v, its 201 said %s/%v", id, rec.Agent, rec.SlotTime, g.Agent, g.SlotTime)
			}
			// The record names where the BRONZE ticket it displaced went.
			if rec.Moved == nil {
				t.Errorf("GOLD %s displaced nobody", id)
				continue
			}
			moved, ok := live[rec.Moved.Ticket]
			if !ok || moved.Agent != rec.Moved.Agent || !moved.SlotTime.Equal(rec.Moved.SlotTime) || moved.Moves != 1 {
				t.Errorf("GOLD %s says %s went to %s/%v, the ticket is %+v", id, rec.Moved.Ticket, rec.Moved.Agent,
					rec.Moved.SlotTime, moved)
			}
		case subjects.Bronze:
			bronze++
			if rec.Moves == 0 && !rec.SlotTime.Before(respT0.Add(frozen*time.Minute)) {
				t.Errorf("BRONZE %s still at %v in the GOLD window past the frozen horizon", id, rec.SlotTime)
			}
		}
	}
	if len(gold) != 115 || bronze != 120 {
		t.Errorf("%d GOLD and %d BRONZE live, want 115 and 120", len(gold), bronze)
	}
	if n := histogramCount(t, reg, "tms_eta_moves", "admission"); n != 235 {
		t.Errorf("tms_eta_moves{reason=admission} counted %d placements, want 235", n)
	}

	// A cancel that names the slot a moved ticket was admitted to (what
	// its asker knew) follows the move and frees the ticket's minute now.
	var g subjects.SlotRecord
	for _, rec := range live {
		if rec.Type == subjects.Gold {
			g = rec
			break
		}
	}
	moved := live[g.Moved.Ticket]
	agent, minute, _, err := subjects.ParseTicketID(moved.Ticket)
	if err != nil {
		t.Fatal(err)
	}
	rel := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETARelease, Tenant: ten.ID, Ticket: moved.Ticket,
		Type: moved.Type, CreatedAt: moved.CreatedAt, Agent: agent, SlotTime: minute})
	if rel.Code != subjects.ETAOK || rel.Agent != moved.Agent || !rel.SlotTime.Equal(moved.SlotTime) {
		t.Fatalf("release of moved ticket %s by its first slot: %+v, want released at %s/%v", moved.Ticket, rel,
			moved.Agent, moved.SlotTime)
	}
	after := e.readPlan(t, ten.ID)
	if rec := after.keys[subjects.SlotKey(ten.ID, moved.Agent, moved.SlotTime)]; rec.State != subjects.SlotReleased || rec.Ticket != moved.Ticket || rec.Moves != 1 {
		t.Errorf("the moved ticket's minute after the cancel: %+v", rec)
	}
	if rec := after.keys[subjects.SlotKey(ten.ID, agent, minute)]; rec.Ticket != g.Ticket || rec.State != subjects.SlotConfirmed {
		t.Errorf("the minute the moved ticket was admitted to, after its cancel: %+v, want GOLD %s untouched", rec, g.Ticket)
	}
}

// TestResponderCapacityChangesNothing: capacity answers per type what a
// reserve would get, by the same test, and writes nothing.
func TestResponderCapacityChangesNothing(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten, _, _ := e.plannedTenant(t, "Capacity Corp", 1, nil)
	nc := e.nats.Connect(t)
	capacity := func() map[string]subjects.TypeCapacity {
		t.Helper()
		rep := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETACapacity, Tenant: ten.ID, CreatedAt: respT0})
		if rep.Code != subjects.ETAOK || len(rep.Capacity) != 3 {
			t.Fatalf("capacity: %+v", rep)
		}
		out := map[string]subjects.TypeCapacity{}
		for _, c := range rep.Capacity {
			out[c.Type] = c
		}
		return out
	}
	got := capacity()
	for typ, want := range map[string]int{subjects.Gold: 120, subjects.Silver: 240, subjects.Bronze: 480} {
		if c := got[typ]; c.Available != want || !c.SlotTime.Equal(respT0) || c.Moves != 0 {
			t.Errorf("empty calendar, %s: %+v, want %d available at %v without moves", typ, c, want, respT0)
		}
	}
	for range 120 {
		mustAsk(t, nc, newReserve(ten.ID, subjects.Bronze, respT0))
	}
	seq := e.lastSlotSeq(t, ten.ID)
	got = capacity()
	if c := got[subjects.Gold]; c.Available != 115 || c.Moves != 1 {
		t.Errorf("GOLD after 120 BRONZE: %+v, want 115 available after one move", c)
	}
	if c := got[subjects.Bronze]; c.Available != 360 || c.Moves != 0 {
		t.Errorf("BRONZE after 120 BRONZE: %+v, want 360 available without moves", c)
	}
	if after := e.lastSlotSeq(t, ten.ID); after != seq {
		t.Errorf("capacity wrote: slot stream at %d, was %d", after, seq)
	}
}

// TestResponderReplanRescuesAbsentAgent: an agent with 100 GOLD tickets
// goes away; the replan moves what fits onto the other agent inside the
// tickets' windows and reports the rest at risk (answer, list, metric,
// events); a second replan moves nothing more.
func TestResponderReplanRescuesAbsentAgent(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	reg := prometheus.NewRegistry()
	ten, agents, r := e.plannedTenant(t, "Replan Corp", 2, reg)
	a := agents[0]
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	nc := e.nats.Connect(t)
	for range 200 {
		if rep := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0)); rep.Code != subjects.ETACreated {
			t.Fatalf("GOLD: %+v", rep)
		}
	}
	onA := 0
	for _, rec := range checkPlan(t, e.readPlan(t, ten.ID)) {
		if rec.Agent == a.ID {
			onA++
		}
	}
	if onA != 100 {
		t.Fatalf("%d tickets on agent %s, want 100", onA, a.ID)
	}
	events := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(subjects.EventSubject(ten.ID, subjects.EventAtRisk), events)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.setStatus(t, ten, a.ID, subjects.AgentUnavailable, respT0)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == 20 },
		"the responder sees the agent gone")

	rep := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAReplan, Tenant: ten.ID})
	// Agent b's free minutes in the GOLD window are the last 20: 20
	// tickets fit there, the other 80 have no minute left in their window.
	if rep.Code != subjects.ETAOK || rep.Moved != 20 || len(rep.AtRisk) != 80 {
		t.Fatalf("replan: code %d moved %d at risk %d (%s), want moved 20 at risk 80", rep.Code, rep.Moved, len(rep.AtRisk), rep.Error)
	}
	live := checkPlan(t, e.readPlan(t, ten.ID))
	risky := map[string]bool{}
	for _, x := range rep.AtRisk {
		risky[x.Ticket] = true
		if rec, ok := live[x.Ticket]; !ok || rec.Agent != a.ID || x.Agent != a.ID || !x.SlotTime.Equal(rec.SlotTime) {
			t.Errorf("at risk %+v, its record %+v", x, rec)
		}
	}
	for id, rec := range live {
		if rec.Agent == a.ID && !risky[id] {
			t.Errorf("ticket %s left on the absent agent at %v without being reported at risk", id, rec.SlotTime)
		}
	}
	if len(live) != 200 {
		t.Errorf("%d live tickets after the replan, want all 200", len(live))
	}
	list := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAAtRisk, Tenant: ten.ID})
	if len(list.AtRisk) != 80 {
		t.Errorf("at_risk lists %d tickets, want 80", len(list.AtRisk))
	}
	if g := gauge(t, reg, "tms_tickets_at_risk"); g != 80 {
		t.Errorf("tms_tickets_at_risk = %v, want 80", g)
	}
	seen := map[string]bool{}
	for len(seen) < 80 {
		select {
		case m := <-events:
			var ev subjects.AtRiskEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Event != subjects.EventAtRisk || ev.Tenant != ten.ID || !risky[ev.Ticket] {
				t.Fatalf("at-risk event %s: %v", m.Data, err)
			}
			seen[ev.Ticket] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d at-risk events received, want 80", len(seen))
		}
	}
	again := mustAsk(t, nc, subjects.ETARequest{Op: subjects.ETAReplan, Tenant: ten.ID})
	if again.Moved != 0 || len(again.AtRisk) != 80 {
		t.Errorf("second replan: moved %d at risk %d, want 0 and 80", again.Moved, len(again.AtRisk))
	}
}

// TestResponderConcurrentPlacementsStayConsistent: 32 clients admit
// mixed tickets through two responders on one agent, so that placements
// with moves race each other, while a reader replays the slot records
// again and again: at every consistent state every ticket holds one
// minute inside its window, and at the end every accepted ticket is live
// exactly once.
func TestResponderConcurrentPlacementsStayConsistent(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten, _, _ := e.plannedTenant(t, "Race Corp", 1, nil)
	e.plannedResponder(t, ten.ID, 1, nil)
	const clients, each = 32, 12
	types := []string{subjects.Bronze, subjects.Bronze, subjects.Silver, subjects.Gold}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		wg       sync.WaitGroup
		stop     atomic.Bool
		reads    atomic.Int32
	)
	var readerDone sync.WaitGroup
	readerDone.Go(func() {
		for !stop.Load() {
			p, err := e.replayPlan(t, ten.ID)
			if err != nil {
				t.Errorf("reader: %v", err)
				return
			}
			checkPlan(t, p)
			reads.Add(1)
		}
	})
	unanswered := map[string]bool{} // nonces of requests whose outcome is unknown
	for c := range clients {
		nc := e.nats.Connect(t)
		wg.Go(func() {
			for i := range each {
				req := newReserve(ten.ID, types[(c+i)%len(types)], respT0)
				data, _ := json.Marshal(req)
				// Placements with moves queue behind each other on a loaded
				// machine: a generous wait, and an unanswered request is an
				// unknown outcome (its ticket may exist), not a failure.
				msg, err := nc.Request(subjects.ETA(ten.ID), data, 30*time.Second)
				if err != nil {
					mu.Lock()
					unanswered[req.Nonce] = true
					mu.Unlock()
					continue
				}
				var rep subjects.ETAReply
				if err := json.Unmarshal(msg.Data, &rep); err != nil {
					t.Errorf("client %d: reply %q: %v", c, msg.Data, err)
					return
				}
				switch rep.Code {
				case subjects.ETACreated:
					mu.Lock()
					accepted[rep.Ticket] = true
					mu.Unlock()
				case 409, 503: // no room, or lost races past the attempts
				default:
					t.Errorf("client %d: %+v", c, rep)
				}
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	readerDone.Wait()
	live := checkPlan(t, e.readPlan(t, ten.ID))
	for id := range accepted {
		if _, ok := live[id]; !ok {
			t.Errorf("accepted ticket %s is not live", id)
		}
	}
	for id := range live {
		if _, _, nonce, _ := subjects.ParseTicketID(id); !accepted[id] && !unanswered[nonce] {
			t.Errorf("live ticket %s was neither accepted nor asked without an answer", id)
		}
	}
	if reads.Load() < 2 {
		t.Errorf("the reader replayed %d states during the run, want several", reads.Load())
	}
	t.Logf("%d accepted of %d (%d unanswered), %d consistent reads", len(accepted), clients*each, len(unanswered), reads.Load())
}

// histogramCount is a histogram's sample count for one label value.
func histogramCount(t *testing.T, reg *prometheus.Registry, name, label string) uint64 {
	t.Helper()
	if m := labelled(t, reg, name, label); m != nil {
		return m.GetHistogram().GetSampleCount()
	}
	return 0
}

// gauge reads a gauge's value from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// TestResponderUtilisation: tms_eta_utilisation_ratio is the reserved
// share of the bookable agent-minutes of the next 8 h over the loaded
// tenants: 0 with nothing reserved, then the tickets admitted over the
// agents' minutes.
func TestResponderUtilisation(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	reg := prometheus.NewRegistry()
	ten, _, _ := e.plannedTenant(t, "Utilisation Corp", 2, reg)
	if g := gauge(t, reg, "tms_eta_utilisation_ratio"); g != 0 {
		t.Fatalf("utilisation %v with nothing reserved, want 0", g)
	}
	nc := e.nats.Connect(t)
	for range 96 {
		if rep := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0)); rep.Code != subjects.ETACreated {
			t.Fatalf("GOLD: %+v", rep)
		}
	}
	// 96 of 2 agents x 480 minutes.
	if g := gauge(t, reg, "tms_eta_utilisation_ratio"); g != 0.1 {
		t.Errorf("utilisation %v, want 0.1", g)
	}
}
