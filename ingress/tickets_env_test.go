package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// ticketEnv is env plus what tickets need, all real: an ETA responder and
// (once started) an allocator from package workers, the internal router
// and the NATS API. The ticket clock is frozen at the start, shared by
// ingress and the responder, so the slot each create gets is predictable.
type ticketEnv struct {
	*env
	clock    *testkit.Clock
	internal http.Handler
	natsAPI  *NATSAPI
	client   *nats.Conn // a caller of the NATS API

	mu    sync.Mutex
	stops []func()
}

type ticketEnvOptions struct {
	holdTTL time.Duration // the responder's; 0: its default
	// etaTimeout is the admission service's (0: testETATimeout).
	etaTimeout time.Duration
	// configure, when set, changes the ingress configuration (limits,
	// timeouts) before the routers and the NATS API are built.
	configure func(*Config)
	// noResponder leaves the ETA subjects to the test's own responder.
	noResponder bool
	// afterReserve is the admission service's AfterReserve hook.
	afterReserve func(ticket string)
}

func newTicketEnv(t testing.TB, opts ticketEnvOptions) *ticketEnv {
	t.Helper()
	e := &ticketEnv{env: newEnv(t), clock: testkit.NewClock(time.Now())}
	t.Cleanup(e.stopAll)
	cfg := e.config(func(context.Context) error { return nil })
	if opts.configure != nil {
		opts.configure(&cfg)
	}
	eta := opts.etaTimeout
	if eta == 0 {
		// Far above the production default: on a loaded 2-core machine a
		// responder's fsynced KV write can take longer than 2 s, and a 503
		// there would fail tests that count admissions exactly.
		eta = testETATimeout
	}
	e.withAdmission(&cfg, admission.Config{Now: e.clock.Now, ETATimeout: eta, AfterReserve: opts.afterReserve})
	h, err := NewInternal(cfg)
	if err != nil {
		t.Fatalf("NewInternal: %v", err)
	}
	e.internal = h
	e.handler, err = NewPublic(cfg)
	if err != nil {
		t.Fatalf("NewPublic: %v", err)
	}
	e.natsAPI, err = NewNATSAPI(cfg)
	if err != nil {
		t.Fatalf("NewNATSAPI: %v", err)
	}
	e.run("nats api", e.natsAPI.Run)
	e.client = e.nats.Connect(t)
	if opts.noResponder {
		testkit.Eventually(t, 20*time.Second, started(e.natsAPI), "the NATS API to start")
		return e
	}

	ctx := testkit.Context(t, time.Minute)
	responder, err := workers.NewResponder(ctx, workers.ResponderConfig{
		NC: e.nats.Connect(t), JS: e.js, Registry: e.registry, Logger: testkit.Logger(t).With("part", "responder"),
		Now: e.clock.Now, HoldTTL: opts.holdTTL,
	})
	if err != nil {
		t.Fatalf("NewResponder: %v", err)
	}
	e.run("responder", responder.Run)
	testkit.Eventually(t, 20*time.Second, func() bool { return responder.Ready() && started(e.natsAPI)() },
		"the responder and the NATS API to start")
	return e
}

// testETATimeout is the ETA timeout of the ticket test env.
const testETATimeout = 10 * time.Second

// started reports whether the NATS API has subscribed (its Started
// channel is closed).
func started(n *NATSAPI) func() bool {
	return func() bool {
		select {
		case <-n.Started():
			return true
		default:
			return false
		}
	}
}

// run starts a part's Run loop, stopped (and its error checked) at cleanup.
func (e *ticketEnv) run(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(ctx); err != nil {
			e.t.Errorf("%s Run: %v", name, err)
		}
	}()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stops = append(e.stops, func() { cancel(); <-done })
}

func (e *ticketEnv) stopAll() {
	e.mu.Lock()
	stops := e.stops
	e.stops = nil
	e.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// startAllocator starts an allocator worker on the env's tenants.
func (e *ticketEnv) startAllocator(t testing.TB) {
	t.Helper()
	ctx := testkit.Context(t, time.Minute)
	alloc, err := workers.NewAllocator(ctx, workers.AllocatorConfig{
		JS: e.js, Registry: e.registry, Tickets: e.tickets, Logger: testkit.Logger(t).With("part", "allocator"),
		Backoff: func(int) time.Duration { return 50 * time.Millisecond },
	})
	if err != nil {
		t.Fatalf("NewAllocator: %v", err)
	}
	e.run("allocator", alloc.Run)
}

// tenantWithAgent opens an account with one available agent.
func (e *ticketEnv) tenantWithAgent(t testing.TB, name, email string) (account, string) {
	t.Helper()
	a := e.openAccount(t, name, email)
	return a, e.addAgent(t, a)
}

func (e *ticketEnv) addAgent(t testing.TB, a account) string {
	t.Helper()
	body := e.must(t, http.StatusCreated, request{method: "POST", path: "/agents", token: a.token,
		body: jsonBody(map[string]string{"client_id": a.id, "name": "agent"})})
	return body["agent_id"].(string)
}

// create is POST /create_ticket.
func (e *ticketEnv) create(t testing.TB, a account, typ string, header http.Header) response {
	t.Helper()
	return e.do(t, request{method: "POST", path: "/create_ticket", token: a.token, header: header,
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": typ})})
}

// createWhenReady creates typ tickets until the responder has seen the
// tenant's agents (a new agent reaches it through a KV watch), and returns
// the first 201.
func (e *ticketEnv) createWhenReady(t testing.TB, a account, typ string) map[string]any {
	t.Helper()
	var got map[string]any
	testkit.Eventually(t, 10*time.Second, func() bool {
		resp := e.create(t, a, typ, nil)
		switch resp.status {
		case http.StatusCreated:
			got = resp.body
			return true
		case http.StatusConflict:
			return false
		}
		t.Fatalf("create_ticket: %d %s", resp.status, resp.raw)
		return false
	}, "the responder to see the tenant's agent")
	return got
}

func (e *ticketEnv) getTicket(t *testing.T, a account, id string) response {
	t.Helper()
	return e.do(t, request{method: "GET", path: "/tickets/" + id, token: a.token})
}

func (e *ticketEnv) cancel(t *testing.T, a account, id string) response {
	t.Helper()
	return e.do(t, request{method: "POST", path: "/cancel_ticket", token: a.token,
		body: jsonBody(map[string]string{"ticket_id": id})})
}

func (e *ticketEnv) internalDo(t *testing.T, path string, body any) response {
	t.Helper()
	return doOn(t, e.internal, request{method: "POST", path: path, body: jsonBody(body)})
}

// natsCall sends one request to the NATS API and decodes the reply.
func (e *ticketEnv) natsCall(t *testing.T, tenant, op string, body any, header nats.Header) map[string]any {
	t.Helper()
	data, ok := body.(string)
	if !ok {
		data = jsonBody(body)
	}
	msg := &nats.Msg{Subject: subjects.API(tenant, op), Data: []byte(data), Header: header}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := e.client.RequestMsgWithContext(ctx, msg)
	if err != nil {
		t.Fatalf("NATS %s: %v", msg.Subject, err)
	}
	var out map[string]any
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		t.Fatalf("NATS %s: reply %q: %v", msg.Subject, reply.Data, err)
	}
	return out
}

// slotRecords counts the tenant's records in its slot shard's stream:
// every write of a responder (a ticket, a hold, a cancel) is one, and
// nothing there deletes.
func (e *ticketEnv) slotRecords(t testing.TB, tenant string) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	shard := subjects.SlotShard(tenant, subjects.DefaultSlotShards)
	st, err := e.js.Stream(ctx, subjects.SlotStream(shard))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("slot stream: %v", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subjects.SlotStreamSubjects(shard)))
	if err != nil {
		t.Fatalf("slot stream info: %v", err)
	}
	var n uint64
	for subject, c := range info.State.Subjects {
		_, key, err := subjects.ParseSlotSubject(subject)
		if err != nil {
			t.Fatalf("slot stream subject %q: %v", subject, err)
		}
		if owner, _, _, err := subjects.ParseSlotKey(key); err == nil && owner == tenant {
			n += c
		}
	}
	return n
}

// slotHistory is every record of a ticket's slot key, oldest first, with
// its revision.
func (e *ticketEnv) slotHistory(t testing.TB, tenant, ticket string) []slotEntry {
	t.Helper()
	agent, minute, _, err := subjects.ParseTicketID(ticket)
	if err != nil {
		t.Fatalf("ticket id %q: %v", ticket, err)
	}
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatalf("slot bucket: %v", err)
	}
	key := subjects.SlotKey(tenant, agent, minute)
	entries, err := kv.History(ctx, key)
	if err != nil {
		t.Fatalf("history of %s: %v", key, err)
	}
	var out []slotEntry
	for _, en := range entries {
		rec, err := subjects.DecodeSlotRecord(key, en.Value(), subjects.CheckWritable)
		if err != nil {
			t.Fatalf("record %d of %s: %v", en.Revision(), key, err)
		}
		out = append(out, slotEntry{rev: en.Revision(), rec: rec})
	}
	return out
}

// slotEntry is one record of a slot key.
type slotEntry struct {
	rev uint64
	rec subjects.SlotRecord
}

// states lists the records' states and tickets, for messages and
// comparisons: "confirmed:t...", "held", ...
func states(entries []slotEntry) []string {
	var out []string
	for _, en := range entries {
		s := en.rec.State
		if en.rec.Ticket != "" {
			s += ":" + en.rec.Ticket
		}
		out = append(out, s)
	}
	return out
}

// slotKeys lists the tenant's keys in its slot shard bucket.
func (e *ticketEnv) slotKeys(t testing.TB, tenant string) []string {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatalf("slot bucket: %v", err)
	}
	lister, err := kv.ListKeysFiltered(ctx, subjects.TenantSlots(tenant))
	if err != nil {
		t.Fatalf("list slot keys: %v", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// idempotencyKeys lists the tenant's keys in the idempotency bucket.
func (e *ticketEnv) idempotencyKeys(t testing.TB, tenant string) []string {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.BucketIdempotency)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("idempotency bucket: %v", err)
	}
	lister, err := kv.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		t.Fatalf("list idempotency keys: %v", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// row reads a ticket's row from the tenant database.
func (e *ticketEnv) row(t *testing.T, tenant, id string) (tenants.TicketRow, error) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	tn, err := e.registry.Get(ctx, tenant)
	if err != nil {
		t.Fatalf("tenant %s: %v", tenant, err)
	}
	return e.tickets.Get(ctx, tn, id)
}

// checkTicketID checks that id is a ticket id of the new form naming the
// agent and minute it was given (subjects.NewSlotTicketID).
func checkTicketID(t testing.TB, id, agent string, slot time.Time) {
	t.Helper()
	a, m, nonce, err := subjects.ParseTicketID(id)
	if err != nil || a != agent || !m.Equal(slot) || subjects.ValidTicketNonce(nonce) != nil {
		t.Fatalf("ticket id %q does not name %s %s (%v)", id, agent, slot.Format(time.RFC3339), err)
	}
}

// oldTicket writes a Gold ticket of the version before ticket ids named
// their slot ("t" and 20 random characters) straight into the tenant's
// database, as an allocator of that version did: such a ticket has no
// slot record.
func (e *ticketEnv) oldTicket(t testing.TB, a account, agent string) subjects.TicketEvent {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	tn, err := e.registry.Get(ctx, a.id)
	if err != nil {
		t.Fatalf("tenant %s: %v", a.id, err)
	}
	created := subjects.Stamp(e.clock.Now().Add(-time.Hour))
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: a.id, Ticket: subjects.NewTicketID(), Type: subjects.Gold,
		Agent: agent, SlotTime: created.Truncate(time.Minute).Add(7 * time.Minute), CreatedAt: created,
		Deadline: created.Add(2 * time.Hour)}
	if err := e.tickets.ApplyCreated(ctx, tn, ev); err != nil {
		t.Fatalf("old ticket: %v", err)
	}
	return ev
}
