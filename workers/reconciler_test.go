package workers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// recEnv is a responder env plus what a worker process has besides: the
// TICKETS streams, ticket rows over its own pools, one tenant with one
// agent whose first slot is recFirst, and a responder. The reconciler's
// clock is its own, so a reservation can be aged without moving the
// responder's.
type recEnv struct {
	*respEnv
	tickets  *tenants.Tickets
	ten      tenants.Tenant
	agent    string
	resp     *workers.Responder
	client   *nats.Conn
	recClock *testkit.Clock
}

// recFirst is the agent's first slot: ten minutes after the responder's
// clock, so aging the reconciler's clock past the grace does not make the
// minute one that has already begun.
var recFirst = respT0.Add(10 * time.Minute)

const recGrace = 30 * time.Second

func newRecEnv(t *testing.T) *recEnv {
	t.Helper()
	e := &recEnv{respEnv: newRespEnv(t), recClock: testkit.NewClock(respT0)}
	pools := tenantstest.StartPools(t, tenants.PoolsConfig{Provisioner: e.tenants.Provisioner})
	e.tickets = tenants.NewTickets(pools, testkit.Logger(t))
	if err := workers.EnsureStreams(testkit.Context(t, 30*time.Second), e.js, 1); err != nil {
		t.Fatal(err)
	}
	e.ten = e.account(t, "Orphan Co")
	e.agent = e.agentAt(t, e.ten, recFirst).ID
	e.resp = e.responder(t, nil)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return e.resp.FreeSlots(e.ten.ID, recFirst, recFirst) == 1
	}, "the responder to see the agent")
	e.client = e.nats.Connect(t)
	return e
}

// reconciler returns a reconciler on the env's clock.
func (e *recEnv) reconciler(t *testing.T, mod func(*workers.ReconcilerConfig)) *workers.Reconciler {
	t.Helper()
	cfg := workers.ReconcilerConfig{JS: e.nats.JetStream(t), Registry: e.reg, Tickets: e.tickets,
		Logger: testkit.Logger(t).With("part", "reconciler"), Now: e.recClock.Now, Grace: recGrace}
	if mod != nil {
		mod(&cfg)
	}
	r, err := workers.NewReconciler(cfg)
	if err != nil {
		t.Fatalf("NewReconciler: %v", err)
	}
	return r
}

// reserve sends a reserve request straight to the responder, as an
// ingress does before it publishes: with no publish after it, this is
// what an ingress that crashed leaves behind.
func (e *recEnv) reserve(t *testing.T, ticket string) subjects.ETAReply {
	t.Helper()
	reply := mustAsk(t, e.client, reserveReq(e.ten.ID, subjects.Gold, ticket, e.clock.Now()))
	if reply.Code != http.StatusCreated {
		t.Fatalf("reserve %s: %+v", ticket, reply)
	}
	return reply
}

// publish publishes the created event of a reservation as the ingress
// does.
func (e *recEnv) publish(t *testing.T, ticket string, r subjects.ETAReply) {
	t.Helper()
	created := e.clock.Now()
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: e.ten.ID, Ticket: ticket, Type: subjects.Gold,
		Agent: r.Agent, SlotTime: r.SlotTime, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(testkit.Context(t, 10*time.Second), subjects.TicketSubject(e.ten.ID, ticket), data,
		jetstream.WithMsgID(ticket), jetstream.WithExpectStream(subjects.StreamTickets)); err != nil {
		t.Fatalf("publish %s: %v", ticket, err)
	}
}

// publishCancel publishes a ticket's cancel as the ingress does.
func (e *recEnv) publishCancel(t *testing.T, ticket string, r subjects.ETAReply) {
	t.Helper()
	at := e.clock.Now()
	ev := subjects.TicketEvent{Event: subjects.TicketCancelled, Tenant: e.ten.ID, Ticket: ticket, Type: subjects.Gold,
		Agent: r.Agent, SlotTime: r.SlotTime, CreatedAt: at, Deadline: at.Add(2 * time.Hour), CancelledAt: &at}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(testkit.Context(t, 10*time.Second), subjects.TicketSubject(e.ten.ID, ticket), data,
		jetstream.WithMsgID(ticket+":cancel"), jetstream.WithExpectStream(subjects.StreamTickets)); err != nil {
		t.Fatalf("publish cancel of %s: %v", ticket, err)
	}
}

func (e *recEnv) key(r subjects.ETAReply) string {
	return subjects.SlotKey(e.ten.ID, r.Agent, r.SlotTime)
}

// has reports whether the slot key exists.
func (e *recEnv) has(t *testing.T, r subjects.ETAReply) bool {
	t.Helper()
	_, ok := e.slotKeys(t, e.ten.ID)[e.key(r)]
	return ok
}

func pass(t *testing.T, r *workers.Reconciler) workers.ReconcileStats {
	t.Helper()
	st, err := r.Pass(testkit.Context(t, 30*time.Second))
	if err != nil {
		t.Fatalf("Pass: %v", err)
	}
	return st
}

// TestReconcilerReleasesOnlyOrphans: a reservation never published is
// released once older than the grace, and its slot is taken again by the
// next reserve; so is the slot of a cancelled ticket whose release never
// happened; a young one, a published one still in the stream, one already
// in the tenant database and, of a ticket id holding two slots, the one
// its event names, are all kept.
func TestReconcilerReleasesOnlyOrphans(t *testing.T) {
	t.Parallel()
	e := newRecEnv(t)
	metrics := prometheus.NewRegistry()
	rec := e.reconciler(t, func(c *workers.ReconcilerConfig) { c.Metrics = metrics })

	orphan := e.reserve(t, "orphan")
	if !orphan.SlotTime.Equal(recFirst) {
		t.Fatalf("first reserve got %v, want %v", orphan.SlotTime, recFirst)
	}
	// A retry of one ticket id: the first slot is the crashed attempt's,
	// the second is the one its event names.
	retryOld := e.reserve(t, "retried")
	retryNew := e.reserve(t, "retried")
	e.publish(t, "retried", retryNew)
	allocated := e.reserve(t, "allocated")
	e.publish(t, "allocated", allocated)
	stopAlloc := e.allocator(t)
	testkit.Eventually(t, 30*time.Second, func() bool { return e.rowAgent(t, "allocated") != "" && e.rowAgent(t, "retried") != "" },
		"the allocator to write the published tickets")
	stopAlloc()
	// Published while no allocator runs: judged from the stream.
	inStream := e.reserve(t, "in-stream")
	e.publish(t, "in-stream", inStream)
	// Cancelled, but the cancel's own release never happened.
	cancelled := e.reserve(t, "cancelled")
	e.publish(t, "cancelled", cancelled)
	e.publishCancel(t, "cancelled", cancelled)

	// Younger than the grace: nothing is judged.
	e.recClock.Set(respT0.Add(recGrace - time.Second))
	if st := pass(t, rec); st.Judged != 0 || st.Released != 0 || st.Scanned != 6 {
		t.Fatalf("pass within the grace: %+v, want 6 scanned, none judged", st)
	}

	e.recClock.Set(respT0.Add(recGrace + time.Second))
	st := pass(t, rec)
	if st.Released != 3 || st.Kept != 3 || st.Undecided != 0 {
		t.Fatalf("pass after the grace: %+v, want 3 released (orphan, the retry's old slot, the cancelled), 3 kept", st)
	}
	for _, gone := range []subjects.ETAReply{orphan, retryOld, cancelled} {
		if e.has(t, gone) {
			t.Errorf("%s still reserved", e.key(gone))
		}
	}
	for _, kept := range []subjects.ETAReply{inStream, retryNew, allocated} {
		if !e.has(t, kept) {
			t.Errorf("%s released", e.key(kept))
		}
	}
	if got := counter(t, metrics, "tms_reconciler_released_total"); got != 3 {
		t.Errorf("released_total = %v, want 3", got)
	}
	// What was judged legitimate is not looked up again.
	if st := pass(t, rec); st.Judged != 0 || st.Released != 0 {
		t.Errorf("second pass: %+v, want nothing judged", st)
	}

	// The orphan's slot is free for the next reserve.
	testkit.Eventually(t, 10*time.Second, func() bool {
		return e.resp.FreeSlots(e.ten.ID, recFirst, recFirst) == 1
	}, "the responder to see the orphan's slot free")
	if again := e.reserve(t, "next"); again.Agent != orphan.Agent || !again.SlotTime.Equal(orphan.SlotTime) {
		t.Errorf("next reserve got %s %v, want the orphan's slot %v", again.Agent, again.SlotTime, orphan.SlotTime)
	}
}

// TestReconcilerUndecidedWhileTheDatabaseIsDown: a ticket whose message was
// consumed can only be judged from the tenant database; while it cannot
// be reached, nothing of that tenant is released, the orphan included.
// Once it is back, the orphan goes and the ticket stays.
func TestReconcilerUndecidedWhileTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	e := newRecEnv(t)
	rec := e.reconciler(t, nil)
	orphan := e.reserve(t, "orphan")
	ticket := e.reserve(t, "consumed")
	e.publish(t, "consumed", ticket)
	stopAlloc := e.allocator(t)
	testkit.Eventually(t, 30*time.Second, func() bool { return e.rowAgent(t, "consumed") != "" }, "the ticket row")
	stopAlloc()

	ctx := testkit.Context(t, 60*time.Second)
	restore := testkit.RefuseConnections(t, e.ten.DBName)

	e.recClock.Set(respT0.Add(recGrace + time.Second))
	st := pass(t, rec)
	if st.Released != 0 || st.Undecided != 2 {
		t.Fatalf("pass while the database is down: %+v, want 2 undecided, none released", st)
	}
	if !e.has(t, orphan) || !e.has(t, ticket) {
		t.Fatal("a reservation was released while its ticket could not be looked up")
	}

	restore()
	testkit.Eventually(t, 30*time.Second, func() bool {
		st, err := rec.Pass(ctx)
		return err == nil && st.Undecided == 0
	}, "a pass that can judge everything")
	if e.has(t, orphan) || !e.has(t, ticket) {
		t.Errorf("after the outage: orphan present %v, ticket present %v; want only the ticket", e.has(t, orphan), e.has(t, ticket))
	}
}

// TestReconcilerRun: Run passes on its own, every Interval, and stops with
// its context.
func TestReconcilerRun(t *testing.T) {
	t.Parallel()
	e := newRecEnv(t)
	rec := e.reconciler(t, func(c *workers.ReconcilerConfig) { c.Interval = 20 * time.Millisecond })
	orphan := e.reserve(t, "orphan")
	testkit.Run(t, "Reconciler", rec.Run)
	e.recClock.Set(respT0.Add(recGrace + time.Second))
	testkit.Eventually(t, 10*time.Second, func() bool { return !e.has(t, orphan) }, "Run to release the orphan")
}

func TestReconcilerConfig(t *testing.T) {
	t.Parallel()
	if _, err := workers.NewReconciler(workers.ReconcilerConfig{}); !errors.Is(err, workers.ErrReconcilerConfig) {
		t.Errorf("empty config: %v", err)
	}
}

// allocator runs an allocator until the returned stop.
func (e *recEnv) allocator(t *testing.T) (stop func()) {
	t.Helper()
	a, err := workers.NewAllocator(testkit.Context(t, 30*time.Second), workers.AllocatorConfig{
		JS: e.nats.JetStream(t), Registry: e.reg, Tickets: e.tickets, Logger: testkit.Logger(t).With("part", "allocator"),
		Backoff: fastBackoff,
	})
	if err != nil {
		t.Fatal(err)
	}
	return testkit.Run(t, "Allocator", a.Run)
}

// rowAgent is the agent of a ticket's row, "" while there is none.
func (e *recEnv) rowAgent(t *testing.T, ticket string) string {
	t.Helper()
	row, _ := tenantstest.TicketRow(t, e.tickets, e.ten, ticket)
	return row.Agent
}
