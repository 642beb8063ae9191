package workers_test

import (
	"context"
	"encoding/json"
	"errors"
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

// respEnv is one embedded NATS server, real tenants (registry, databases,
// agents) on the test Postgres, and a fake clock every part shares.
type respEnv struct {
	nats *testkit.NATS // nil on a cluster
	// connect opens a new client connection to the server or cluster;
	// replicas is the replica count of everything the env creates.
	connect  func(testing.TB) *nats.Conn
	replicas int
	js       jetstream.JetStream
	tenants  *tenantstest.Env
	reg      *tenants.Registry
	agents   *tenants.Agents
	clock    *testkit.Clock
}

// respT0 is a whole minute: a GOLD request at it has exactly 120 slots.
var respT0 = time.Date(2030, 5, 6, 10, 0, 0, 0, time.UTC)

func newRespEnv(t testing.TB) *respEnv {
	t.Helper()
	srv := testkit.StartNATS(t)
	e := &respEnv{nats: srv, connect: srv.Connect, replicas: 1}
	return e.start(t)
}

// newClusterRespEnv is newRespEnv on a 3-node cluster with R3 buckets.
func newClusterRespEnv(t testing.TB) *respEnv {
	t.Helper()
	c := testkit.StartCluster(t, 3)
	return (&respEnv{connect: c.Connect, replicas: 3}).start(t)
}

func (e *respEnv) start(t testing.TB) *respEnv {
	t.Helper()
	e.clock = testkit.NewClock(respT0)
	js, err := jetstream.New(e.connect(t))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	e.tenants = tenantstest.New(t, e.js, tenantstest.Config{Now: e.clock.Now, Replicas: e.replicas})
	e.reg, e.agents = e.tenants.Registry, e.tenants.Agents()
	return e
}

func (e *respEnv) account(t testing.TB, name string) tenants.Tenant {
	t.Helper()
	return e.tenants.Account(t, name, testkit.RandomSuffix(8)+"@eta.example")
}

// agentAt creates an agent of ten that became available at since.
func (e *respEnv) agentAt(t testing.TB, ten tenants.Tenant, since time.Time) tenants.Agent {
	t.Helper()
	saved := e.clock.Now()
	e.clock.Set(since)
	defer e.clock.Set(saved)
	a, err := e.agents.Create(testkit.Context(t, 30*time.Second), ten, "agent "+testkit.RandomSuffix(4))
	if err != nil {
		t.Fatalf("create agent: %v", err)
	}
	return a
}

func (e *respEnv) setStatus(t *testing.T, ten tenants.Tenant, agent, status string, at time.Time) {
	t.Helper()
	saved := e.clock.Now()
	e.clock.Set(at)
	defer e.clock.Set(saved)
	if _, err := e.agents.SetStatus(testkit.Context(t, 30*time.Second), ten, agent, status); err != nil {
		t.Fatalf("SetStatus(%s, %s): %v", agent, status, err)
	}
}

// responder starts a responder on its own NATS connection, ready.
func (e *respEnv) responder(t testing.TB, mod func(*workers.ResponderConfig)) *workers.Responder {
	t.Helper()
	nc := e.connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := workers.ResponderConfig{NC: nc, JS: js, Registry: e.reg, Logger: testkit.Logger(t), Now: e.clock.Now,
		Concurrency: 16, Replicas: e.replicas}
	if mod != nil {
		mod(&cfg)
	}
	r, err := tenantstest.Retry(t, "responder", func(ctx context.Context) (*workers.Responder, error) {
		return workers.NewResponder(ctx, cfg)
	})
	if err != nil {
		t.Fatalf("NewResponder: %v", err)
	}
	testkit.Start(t, "Responder", r, 15*time.Second)
	return r
}

// ask sends one request and decodes the answer.
func ask(t *testing.T, nc *nats.Conn, subject string, req any) (subjects.ETAReply, error) {
	t.Helper()
	var data []byte
	switch v := req.(type) {
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return subjects.ETAReply{}, err
	}
	var reply subjects.ETAReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatalf("decoding reply %q: %v", msg.Data, err)
	}
	return reply, nil
}

// mustAsk is ask for a request that must be answered.
func mustAsk(t *testing.T, nc *nats.Conn, req subjects.ETARequest) subjects.ETAReply {
	t.Helper()
	reply, err := ask(t, nc, subjects.ETA(req.Tenant), req)
	if err != nil {
		t.Fatalf("%s request: %v", req.Op, err)
	}
	return reply
}

// newReserve is a reserve with a fresh nonce, as an ingress asks it.
func newReserve(tenant, typ string, created time.Time) subjects.ETARequest {
	return subjects.ETARequest{Op: subjects.ETAReserve, Tenant: tenant, Type: typ, CreatedAt: created,
		Nonce: subjects.NewTicketNonce()}
}

// releaseReq is the release of a reserved ticket, as cancel_ticket asks
// it: the ticket's id, type and instant, and the slot the reply named.
func releaseReq(tenant, typ string, created time.Time, reply subjects.ETAReply) subjects.ETARequest {
	return subjects.ETARequest{Op: subjects.ETARelease, Tenant: tenant, Ticket: reply.Ticket, Type: typ,
		CreatedAt: created, Agent: reply.Agent, SlotTime: reply.SlotTime}
}

// slotKV is the slot bucket of tenant's shard.
func (e *respEnv) slotKV(t testing.TB, tenant string) jetstream.KeyValue {
	t.Helper()
	kv, err := e.js.KeyValue(testkit.Context(t, 10*time.Second), subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// record reads the newest record of a slot key and its revision; ok is
// false if the key has none.
func (e *respEnv) record(t testing.TB, tenant, key string) (subjects.SlotRecord, uint64, bool) {
	t.Helper()
	en, err := e.slotKV(t, tenant).Get(testkit.Context(t, 10*time.Second), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return subjects.SlotRecord{}, 0, false
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	rec, err := subjects.DecodeSlotRecord(key, en.Value(), subjects.CheckWritable)
	if err != nil {
		t.Fatalf("record of %s: %v", key, err)
	}
	return rec, en.Revision(), true
}

// busyKeys is slotKeys without the records that leave their minute free
// at the env's clock (released, expired holds).
func (e *respEnv) busyKeys(t *testing.T, tenant string) map[string]subjects.SlotRecord {
	t.Helper()
	out := e.slotKeys(t, tenant)
	for key, rec := range out {
		if !rec.Busy(e.clock.Now()) {
			delete(out, key)
		}
	}
	return out
}

// lastSlotSeq is the last sequence of tenant's slot bucket stream: every
// write moves it.
func (e *respEnv) lastSlotSeq(t testing.TB, tenant string) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	st, err := e.js.Stream(ctx, subjects.SlotStream(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// slotKeys returns every slot key of tenant with its newest record.
func (e *respEnv) slotKeys(t *testing.T, tenant string) map[string]subjects.SlotRecord {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeysFiltered(ctx, subjects.TenantSlots(tenant))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]subjects.SlotRecord{}
	for key := range lister.Keys() {
		en, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		// Every record a responder writes is one an allocator accepts.
		rec, err := subjects.DecodeSlotRecord(key, en.Value(), subjects.CheckWritable)
		if err != nil {
			t.Fatalf("record of %s: %v", key, err)
		}
		out[key] = rec
	}
	return out
}

// counter reads a counter's value (summed over labels) from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
