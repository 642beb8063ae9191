package workers_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
)

// lastAgentsRev is the last revision of the agents bucket: the next write
// gets the one after it, as nothing else writes the env's private server.
func (e *respEnv) lastAgentsRev(t *testing.T) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	st, err := e.js.Stream(ctx, "KV_"+subjects.BucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// waits reads tms_eta_agents_wait_seconds' count for one outcome.
func waits(t *testing.T, reg *prometheus.Registry, outcome string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tms_eta_agents_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

type answered struct {
	reply subjects.ETAReply
	err   error
}

// askLater sends req from another goroutine; the answer arrives on the
// channel.
func askLater(nc *nats.Conn, req subjects.ETARequest) <-chan answered {
	out := make(chan answered, 1)
	go func() {
		var a answered
		defer func() { out <- a }()
		data, err := json.Marshal(req)
		if err != nil {
			a.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		msg, err := nc.RequestWithContext(ctx, subjects.ETA(req.Tenant), data)
		if err != nil {
			a.err = err
			return
		}
		a.err = json.Unmarshal(msg.Data, &a.reply)
	}()
	return out
}

// TestResponderWaitsForAgentsRevision: a request that carries the
// revision of an agent write the responder's watch has not applied yet is
// answered only after it has, from the calendar with the change: the
// agent just registered takes the GOLD ticket (without the wait: 409, the
// tenant had no agent), the agent just made unavailable refuses the
// BRONZE hold (without it: a hold on the unavailable agent). The writes
// are made only once the requests are seen waiting, so the order is
// certain, not a race the test hopes to win.
func TestResponderWaitsForAgentsRevision(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Fresh Ltd")
	reg := prometheus.NewRegistry()
	// A bound far beyond the test's own steps: the writes decide when the
	// answers come.
	r := e.responder(t, func(c *workers.ResponderConfig) { c.AgentsWait = time.Minute; c.Metrics = reg })
	nc := e.nats.Connect(t)

	next := e.lastAgentsRev(t) + 1
	req := newReserve(ten.ID, subjects.Gold, respT0)
	req.AgentsRev = next
	pending := askLater(nc, req)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.AgentsWaiting() == 1 }, "the reserve waiting")
	select {
	case a := <-pending:
		t.Fatalf("answered before the agent write was made: %+v %v", a.reply, a.err)
	default:
	}
	ag := e.agentAt(t, ten, respT0)
	if got := e.agents.Revision(ten.ID); got != next {
		t.Fatalf("Agents.Revision after the create = %d, want the put's revision %d", got, next)
	}
	a := <-pending
	if a.err != nil || a.reply.Code != http.StatusCreated || a.reply.Agent != ag.ID {
		t.Fatalf("reserve right after the agent was registered: %+v %v, want 201 on %s", a.reply, a.err, ag.ID)
	}

	next = e.lastAgentsRev(t) + 1
	hold := subjects.ETARequest{Op: subjects.ETAHold, Tenant: ten.ID, Type: subjects.Bronze, CreatedAt: respT0,
		AgentsRev: next}
	pending = askLater(nc, hold)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.AgentsWaiting() == 1 }, "the hold waiting")
	e.setStatus(t, ten, ag.ID, subjects.AgentUnavailable, respT0)
	if got := e.agents.Revision(ten.ID); got != next {
		t.Fatalf("Agents.Revision after SetStatus = %d, want %d", got, next)
	}
	a = <-pending
	if a.err != nil || a.reply.Code != http.StatusConflict {
		t.Fatalf("hold right after the only agent became unavailable: %+v %v, want 409", a.reply, a.err)
	}
	if n := waits(t, reg, "applied"); n != 2 {
		t.Errorf("waits counted as applied: %d, want 2", n)
	}
	if keys := e.slotKeys(t, ten.ID); len(keys) != 1 {
		t.Errorf("slot keys %v, want only the reserve's", keys)
	}
}

// TestResponderAgentsRevisionNeverArrives: a request for a revision no
// agent write has is refused 400 once the bound has passed (a forged
// request; the ingress sends only revisions of acknowledged writes), and
// writes nothing. A responder that starts after the writes has applied all
// of them, the last being a purge marker, and waits for none.
func TestResponderAgentsRevisionNeverArrives(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Patient plc")
	e.agentAt(t, ten, respT0)
	kv, err := e.js.KeyValue(testkit.Context(t, 10*time.Second), subjects.BucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	// The bucket's last entry a marker: the snapshot's revision counts it.
	if err := kv.Purge(testkit.Context(t, 10*time.Second), subjects.AgentKey(ten.ID, "agone")); err != nil {
		t.Fatal(err)
	}
	last := e.lastAgentsRev(t)
	reg := prometheus.NewRegistry()
	bound := 200 * time.Millisecond
	e.responder(t, func(c *workers.ResponderConfig) { c.AgentsWait = bound; c.Metrics = reg })
	nc := e.nats.Connect(t)

	req := newReserve(ten.ID, subjects.Gold, respT0)
	req.AgentsRev = last + 1000
	began := time.Now()
	reply := mustAsk(t, nc, req)
	if reply.Code != http.StatusBadRequest || reply.Error != "invalid_field" || !strings.Contains(reply.Message, "agents_rev") {
		t.Fatalf("reserve for a revision no write has: %+v, want 400 invalid_field agents_rev", reply)
	}
	if took := time.Since(began); took < bound {
		t.Errorf("refused after %s, before the %s bound", took, bound)
	}
	if keys := e.slotKeys(t, ten.ID); len(keys) != 0 {
		t.Errorf("the refused reserve left keys: %v", keys)
	}
	if n := waits(t, reg, "timed_out"); n != 1 {
		t.Errorf("waits counted as timed out: %d, want 1", n)
	}

	req.AgentsRev = last
	if reply := mustAsk(t, nc, req); reply.Code != http.StatusCreated {
		t.Fatalf("reserve for the bucket's last revision: %+v, want 201", reply)
	}
	if n := waits(t, reg, "applied"); n != 0 {
		t.Errorf("a request for a revision the snapshot had waited (%d waits)", n)
	}
}

// TestResponderAgentsWatchBehind: when the responder's watch cannot get
// to a revision that exists (here: its connection to NATS is cut, and the
// agent write is made on another), the answer after the bound is 503, not
// one from the calendar without the write, and nothing is written.
func TestResponderAgentsWatchBehind(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	ten := e.account(t, "Cut Off Ltd")
	reg := prometheus.NewRegistry()
	bound := 200 * time.Millisecond
	proxy := testkit.NewProxy(t, strings.TrimPrefix(e.nats.URL(), "nats://"))
	nc, err := nats.Connect("nats://"+proxy.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r, err := workers.NewResponder(testkit.Context(t, 30*time.Second), workers.ResponderConfig{NC: nc, JS: js,
		Registry: e.reg, Logger: testkit.Logger(t), Now: e.clock.Now, AgentsWait: bound, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Start(t, "Responder", r, 15*time.Second)
	t.Cleanup(proxy.Restore) // before the responder stops, so that it stops cleanly

	proxy.Cut()
	e.agentAt(t, ten, respT0)
	req := newReserve(ten.ID, subjects.Gold, respT0)
	req.AgentsRev = e.agents.Revision(ten.ID)
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// Handle is what the subscription calls: the request cannot travel
	// over the cut connection either.
	reply := r.Handle(testkit.Context(t, 30*time.Second), subjects.ETA(ten.ID), data)
	if reply.Code != http.StatusServiceUnavailable || reply.Error != "unavailable" || !strings.Contains(reply.Message, "agents") {
		t.Fatalf("reserve while the watch cannot see the agent write: %+v, want 503 unavailable naming the agents", reply)
	}
	if n := waits(t, reg, "timed_out"); n != 1 {
		t.Errorf("waits counted as timed out: %d, want 1", n)
	}
	if keys := e.slotKeys(t, ten.ID); len(keys) != 0 {
		t.Errorf("the refused reserve left keys: %v", keys)
	}
}
