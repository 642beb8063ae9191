package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tms/ops/jskit"
	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// allocEnv is an embedded NATS server, real tenant components over the
// test Postgres, tenants with agents, the slot buckets and the dead-letter
// stream. The tests write slot records into the buckets as the responders
// do, and read the tenant databases.
type allocEnv struct {
	*allocTenant // the first tenant
	nats         *testkit.NATS
	js           jetstream.JetStream
	reg          *tenants.Registry
	tickets      *tenants.Tickets
	shards       int
	kvs          []jetstream.KeyValue
	tenants      []*allocTenant
	quiet        bool
}

// allocTenant is one tenant of an allocEnv.
type allocTenant struct {
	e      *allocEnv
	ten    tenants.Tenant
	agents []string
	dbURL  string
}

// newAllocEnv makes nTenants tenants of agents agents each, and picks a
// shard count (at least 2) that puts each tenant in a shard of its own
// when one exists, so that several consumers carry tickets.
func newAllocEnv(t testing.TB, agents, nTenants int) *allocEnv {
	t.Helper()
	return newAllocEnvWith(t, envOpts{agents: agents, tenants: nTenants})
}

// envOpts is what an allocEnv differs in.
type envOpts struct {
	agents, tenants int
	// shards: 0 picks a count that gives each tenant its own shard.
	shards int
	// openedByAllocator leaves the slot buckets to the first allocator
	// started (openBuckets opens them after): its SlotMaxAge is theirs.
	openedByAllocator bool
	// quiet: the allocators and the tickets log nothing (benchmarks,
	// whose log is always printed).
	quiet bool
}

func newAllocEnvWith(t testing.TB, o envOpts) *allocEnv {
	t.Helper()
	ctx := testkit.Context(t, 60*time.Second)
	e := &allocEnv{nats: testkit.StartNATS(t)}
	e.js = e.nats.JetStream(t)
	tw := tenantstest.New(t, e.js, tenantstest.Config{})
	e.reg, e.tickets = tw.Registry, tw.Tickets
	if o.quiet {
		e.quiet = true
		e.tickets = tenants.NewTickets(tw.Pools, slog.New(slog.DiscardHandler))
	}
	ag := tw.Agents()
	if err := workers.EnsureStreams(ctx, e.js, 1); err != nil {
		t.Fatal(err)
	}
	for n := range o.tenants {
		tn := &allocTenant{e: e, ten: tw.Account(t, fmt.Sprintf("Allocator Co %d", n), "")}
		for i := range o.agents {
			a, err := ag.Create(ctx, tn.ten, fmt.Sprintf("Agent %d", i))
			if err != nil {
				t.Fatal(err)
			}
			tn.agents = append(tn.agents, a.ID)
		}
		tn.dbURL = testkit.DatabaseURL(t, testkit.PostgresURL(), tn.ten.DBName)
		e.tenants = append(e.tenants, tn)
	}
	e.allocTenant = e.tenants[0]
	e.shards = o.shards
	if e.shards == 0 {
		e.shards = 2
		for n := 2; n <= 16; n++ {
			seen := map[int]bool{}
			for _, tn := range e.tenants {
				seen[subjects.SlotShard(tn.ten.ID, n)] = true
			}
			if len(seen) == len(e.tenants) {
				e.shards = n
				break
			}
		}
	}
	if !o.openedByAllocator {
		for i := range e.shards {
			kv, err := jskit.OpenBucket(ctx, e.js, subjects.SlotBucketConfig(i, 1, 0))
			if err != nil {
				t.Fatal(err)
			}
			e.kvs = append(e.kvs, kv)
		}
	}
	return e
}

// openBuckets opens the slot buckets an allocator created.
func (e *allocEnv) openBuckets(t testing.TB) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	for i := range e.shards {
		kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(i))
		if err != nil {
			t.Fatal(err)
		}
		e.kvs = append(e.kvs, kv)
	}
}

// fastBackoff keeps redeliveries quick in tests.
func fastBackoff(int) time.Duration { return 20 * time.Millisecond }

// fastDownBackoff keeps a tenant whose database failed down briefly in
// tests: 25ms doubling up to 400ms.
func fastDownBackoff(failures int) time.Duration {
	return min(25*time.Millisecond<<min(failures, 5), 400*time.Millisecond)
}

// allocOpts is what one allocator of a test differs in.
type allocOpts struct {
	concurrency int
	batchSize   int
	batchWait   time.Duration
	slotMaxAge  time.Duration
	metrics     prometheus.Registerer
	ackWait     time.Duration // 0: 2s
	js          jetstream.JetStream
	before      func(ticket string)
	after       func(ticket string)
	// edit, when set, changes the configuration last.
	edit func(*workers.AllocatorConfig)
}

// start runs an allocator (on its own NATS connection unless o.js is set)
// until stop.
func (e *allocEnv) start(t testing.TB, o allocOpts) (stop func()) {
	t.Helper()
	return testkit.Run(t, "Allocator", e.allocator(t, o).Run)
}

// allocator is a new allocator (on its own NATS connection unless o.js
// is set), not running.
func (e *allocEnv) allocator(t testing.TB, o allocOpts) *workers.Allocator {
	t.Helper()
	if o.js == nil {
		o.js = e.nats.JetStream(t)
	}
	if o.ackWait == 0 {
		o.ackWait = 2 * time.Second
	}
	log := testkit.Logger(t)
	if e.quiet {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := workers.AllocatorConfig{
		JS: o.js, Registry: e.reg, Tickets: e.tickets, Logger: log, Shards: e.shards,
		Concurrency: o.concurrency, BatchSize: o.batchSize, BatchWait: o.batchWait, SlotMaxAge: o.slotMaxAge,
		Backoff: fastBackoff, DownBackoff: fastDownBackoff, AckWait: o.ackWait, Metrics: o.metrics,
		BeforeCommit: o.before, AfterCommit: o.after,
	}
	if o.edit != nil {
		o.edit(&cfg)
	}
	a, err := workers.NewAllocator(testkit.Context(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var allocT0 = time.Date(2031, 3, 4, 5, 6, 7, 890000000, time.UTC)

// nonce is a ticket nonce readable in failures: tag, then i, 16
// characters.
func nonce(tag string, i int) string {
	return fmt.Sprintf("%s%0*d", tag, subjects.TicketNonceLen-len(tag), i)
}

// event is the created event of a GOLD ticket of tn created at allocT0,
// in agent i%agents at the (i/agents)-th minute of its window, its id
// made of tag and i.
func (tn *allocTenant) event(tag string, i int) subjects.TicketEvent {
	agent := tn.agents[i%len(tn.agents)]
	slot := allocT0.Truncate(time.Minute).Add(time.Duration(i/len(tn.agents)+1) * time.Minute)
	id, err := subjects.NewSlotTicketID(agent, slot, nonce(tag, i))
	if err != nil {
		panic(err)
	}
	return subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: tn.ten.ID, Ticket: id, Type: subjects.Gold,
		Agent: agent, SlotTime: slot, CreatedAt: allocT0, Deadline: allocT0.Add(2 * time.Hour)}
}

// kv is the bucket of tn's shard.
func (tn *allocTenant) kv() jetstream.KeyValue {
	return tn.e.kvs[subjects.SlotShard(tn.ten.ID, tn.e.shards)]
}

// write puts rec(prev) under key as a responder does: Create when the key
// has no record, else Update over its newest revision prev.
func (e *allocEnv) write(t testing.TB, kv jetstream.KeyValue, key string, rec func(prev uint64) any) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	var prev uint64
	switch cur, err := kv.Get(ctx, key); {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		t.Fatalf("get %s: %v", key, err)
	default:
		prev = cur.Revision()
	}
	body, err := json.Marshal(rec(prev))
	if err != nil {
		t.Fatal(err)
	}
	var rev uint64
	if prev == 0 {
		rev, err = kv.Create(ctx, key, body)
	} else {
		rev, err = kv.Update(ctx, key, body, prev)
	}
	if err != nil {
		t.Fatalf("write %s over revision %d: %v", key, prev, err)
	}
	return rev
}

func slotKey(ev subjects.TicketEvent) string {
	return subjects.SlotKey(ev.Tenant, ev.Agent, ev.SlotTime)
}

// confirm writes ev's confirmed record, as reserve and confirm do.
func (tn *allocTenant) confirm(t testing.TB, ev subjects.TicketEvent) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any { return subjects.ConfirmedRecord(ev, prev) })
}

// release writes the released record of ev's ticket, as release does.
func (tn *allocTenant) release(t testing.TB, ev subjects.TicketEvent) uint64 {
	t.Helper()
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any {
		return subjects.ReleasedRecord(ev, allocT0.Add(time.Minute), prev)
	})
}

// hold writes a hold on ev's minute, as validate_eta does.
func (tn *allocTenant) hold(t testing.TB, ev subjects.TicketEvent) uint64 {
	t.Helper()
	expires := allocT0.Add(time.Minute)
	return tn.e.write(t, tn.kv(), slotKey(ev), func(prev uint64) any {
		return subjects.SlotRecord{State: subjects.SlotHeld, Tenant: ev.Tenant, Agent: ev.Agent, SlotTime: ev.SlotTime,
			Prev: prev, Type: ev.Type, CreatedAt: ev.CreatedAt, Nonce: subjects.NewHoldNonce(), HoldExpiresAt: &expires}
	})
}

// query runs one query on the tenant database on a fresh superuser
// connection (so it works right after the database refused everyone).
func (tn *allocTenant) query(t testing.TB, sql string, args ...any) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, tn.dbURL)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func (tn *allocTenant) mustQuery(t testing.TB, sql string, args ...any) int {
	t.Helper()
	n, err := tn.query(t, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (tn *allocTenant) rows(t testing.TB) int {
	t.Helper()
	return tn.mustQuery(t, `SELECT count(*) FROM tickets`)
}

// waitRows waits until the tenant database holds n ticket rows.
func (tn *allocTenant) waitRows(t testing.TB, n int) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool {
		got, err := tn.query(t, `SELECT count(*) FROM tickets`)
		return err == nil && got >= n
	}, fmt.Sprintf("%d ticket rows", n))
}

// consumerInfo reads the allocators' consumer of shard i.
func (e *allocEnv) consumerInfo(ctx context.Context, shard int) (*jetstream.ConsumerInfo, error) {
	c, err := e.js.Consumer(ctx, subjects.SlotStream(shard), subjects.AllocatorConsumer(shard))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// waitConsumed waits until every record of every shard, and every
// parked record, has been acked or terminated by the allocators.
func (e *allocEnv) waitConsumed(t testing.TB) {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	testkit.Eventually(t, 30*time.Second, func() bool {
		for i := range e.shards {
			info, err := e.consumerInfo(ctx, i)
			if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
				return false
			}
		}
		info, err := e.parkedConsumerInfo(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "every slot record acked")
}

// parkedConsumerInfo reads the allocators' consumer of the parked stream.
func (e *allocEnv) parkedConsumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := e.js.Consumer(ctx, subjects.StreamParked, subjects.ConsumerParked)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// parkedMsgs is the message count of the parked stream.
func (e *allocEnv) parkedMsgs(t testing.TB) uint64 {
	t.Helper()
	return e.msgs(t, subjects.StreamParked)
}

func (e *allocEnv) msgs(t testing.TB, stream string) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// streamMsgs is the message count of shard i's stream.
func (e *allocEnv) streamMsgs(t testing.TB, shard int) uint64 {
	t.Helper()
	return e.msgs(t, subjects.SlotStream(shard))
}

func (tn *allocTenant) status(t testing.TB, id string) string {
	t.Helper()
	row, _ := tenantstest.TicketRow(t, tn.e.tickets, tn.ten, id)
	return row.Status // "" while there is none
}

// checkExactlyOnce: every id has exactly one allocated row, there are no
// others, and each row's minute is marked unavailable.
func (tn *allocTenant) checkExactlyOnce(t testing.TB, ids []string) {
	t.Helper()
	if n := tn.rows(t); n != len(ids) {
		t.Errorf("tenant %s: %d ticket rows, want %d", tn.ten.ID, n, len(ids))
	}
	n := tn.mustQuery(t, `SELECT count(*) FROM tickets WHERE id = ANY($1) AND status = 'allocated'`, ids)
	if n != len(ids) {
		t.Errorf("tenant %s: %d of %d tickets allocated", tn.ten.ID, n, len(ids))
	}
	busy := tn.mustQuery(t, `SELECT count(*) FROM slots s JOIN tickets t ON t.slot_id = s.id WHERE s.available = 'unavailable'`)
	if busy != len(ids) {
		t.Errorf("tenant %s: %d slots unavailable, want %d", tn.ten.ID, busy, len(ids))
	}
}

// TestAllocatorNoLostTicket is I1 within one process: tickets accepted
// while no allocator runs land once one starts; an allocator that dies
// half way (its connection gone right after a commit, before the ack)
// and a new one still land each exactly once, in every tenant's shard.
func TestAllocatorNoLostTicket(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 2)
	ids := map[*allocTenant][]string{}
	confirm := func(from, to int) {
		for i := from; i < to; i++ {
			tn := e.tenants[i%len(e.tenants)]
			ev := tn.event("lost", i)
			ids[tn] = append(ids[tn], ev.Ticket)
			tn.confirm(t, ev)
		}
	}
	confirm(0, 60)
	for _, tn := range e.tenants {
		if n := tn.rows(t); n != 0 {
			t.Fatalf("%d rows before any allocator ran", n)
		}
	}

	nc := e.nats.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	committed := 0
	crashed := make(chan struct{})
	stop := e.start(t, allocOpts{concurrency: 4, js: js, after: func(string) {
		mu.Lock()
		defer mu.Unlock()
		if committed++; committed == 10 {
			nc.Close() // the process dies: this commit and those in flight are never acked
			close(crashed)
		}
	}})
	<-crashed
	stop()
	confirm(60, 100) // accepted while no allocator runs

	total := 0
	for _, tn := range e.tenants {
		total += tn.rows(t)
	}
	if total >= 100 {
		t.Fatalf("all %d rows written before the second allocator started", total)
	}
	e.start(t, allocOpts{concurrency: 4})
	for _, tn := range e.tenants {
		tn.waitRows(t, len(ids[tn]))
	}
	e.waitConsumed(t)
	for _, tn := range e.tenants {
		tn.checkExactlyOnce(t, ids[tn])
	}
}

// TestAllocatorAcksKeepRecords: the slot streams have limits retention,
// so an allocator's acks delete nothing: every record is still in the
// stream and its key still reads the ticket once all are written.
func TestAllocatorAcksKeepRecords(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	var ids []string
	for i := range 20 {
		ev := e.event("keep", i)
		ids = append(ids, ev.Ticket)
		e.confirm(t, ev)
	}
	held := e.event("keep", 20)
	e.hold(t, held)
	before := e.streamMsgs(t, shard)
	if before != 21 {
		t.Fatalf("%d records in the stream before the allocator ran, want 21", before)
	}

	e.start(t, allocOpts{concurrency: 4})
	e.waitRows(t, len(ids))
	e.waitConsumed(t)
	if after := e.streamMsgs(t, shard); after != before {
		t.Errorf("%d records in the stream after the acks, want all %d kept", after, before)
	}
	ctx := testkit.Context(t, 10*time.Second)
	for _, ev := range []subjects.TicketEvent{e.event("keep", 0), e.event("keep", 19)} {
		entry, err := e.kv().Get(ctx, slotKey(ev))
		if err != nil {
			t.Fatalf("key of %s after the ack: %v", ev.Ticket, err)
		}
		rec, err := subjects.DecodeSlotRecord(entry.Key(), entry.Value(), subjects.CheckWritable)
		if err != nil || rec.State != subjects.SlotConfirmed || rec.Ticket != ev.Ticket {
			t.Errorf("key of %s reads %+v (%v) after the ack, want its confirmed record", ev.Ticket, rec, err)
		}
	}
	e.checkExactlyOnce(t, ids)
}

// TestAllocatorPostgresOutage: while the tenant database refuses
// connections nothing is dropped: the records are parked (every one kept
// in the parked stream, none held by the shard's consumer); once the
// database is back every ticket lands once and the parked stream is
// empty.
func TestAllocatorPostgresOutage(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	ctx := testkit.Context(t, 60*time.Second)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 4, metrics: metrics})

	// Warm the pool: the outage below must also kill live connections.
	first := e.event("warm", 0)
	e.confirm(t, first)
	e.waitRows(t, 1)

	restore := testkit.RefuseConnections(t, e.ten.DBName)

	ids := []string{first.Ticket}
	for i := 1; i <= 10; i++ {
		ev := e.event("out", i)
		ids = append(ids, ev.Ticket)
		e.confirm(t, ev)
	}
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterValue(t, metrics, "tms_allocator_parked_total", subjects.TicketCreated) >= 10
	}, "every record of the outage parked")
	if n := e.parkedMsgs(t); n != 10 {
		t.Fatalf("during the outage: %d parked records, want all 10 kept", n)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		info, err := e.consumerInfo(ctx, shard)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "the shard's consumer past the parked records")
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterValue(t, metrics, "tms_allocator_failed_total", "unavailable") >= 10
	}, "parked records retried while the database is down")
	if n, err := e.query(t, `SELECT count(*) FROM tickets`); err == nil {
		t.Fatalf("the database answered during the outage: %d rows", n)
	}

	restore()
	e.waitRows(t, len(ids))
	e.waitConsumed(t)
	e.checkExactlyOnce(t, ids)
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.TicketCreated); got != float64(len(ids)) {
		t.Errorf("processed{created} = %v, want %d", got, len(ids))
	}
	if n := e.parkedMsgs(t); n != 0 {
		t.Errorf("%d parked records left once written", n)
	}
}

// counterValue reads one labelled child of a registered counter vector
// (0 when it was never incremented).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	if m := labelled(t, reg, name, label); m != nil {
		return m.GetCounter().GetValue()
	}
	return 0
}

// labelled is the child of metric family name that has a label with
// value label, or nil.
func labelled(t *testing.T, reg *prometheus.Registry, name, label string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m
				}
			}
		}
	}
	return nil
}

// commitCounter counts, over every allocator that calls it, how often
// each ticket was about to be written.
type commitCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *commitCounter) before(ticket string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[ticket]++
}

// TestAllocatorsShareTheWork: two allocator processes on their own
// connections share the durable consumers; both write, and no ticket is
// written twice (each record is handed to one of them, once).
func TestAllocatorsShareTheWork(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2, 1)
	ctx := testkit.Context(t, 60*time.Second)
	m1, m2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	commits := &commitCounter{n: map[string]int{}}
	// A long ack wait: a redelivery here would be the server's, not a
	// second process taking a record the first one has.
	e.start(t, allocOpts{concurrency: 2, metrics: m1, ackWait: 30 * time.Second, before: commits.before})
	e.start(t, allocOpts{concurrency: 2, metrics: m2, ackWait: 30 * time.Second, before: commits.before})
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	testkit.Eventually(t, 10*time.Second, func() bool {
		info, err := e.consumerInfo(ctx, shard)
		return err == nil && info.NumWaiting >= 2
	}, "both allocators pulling")
	var ids []string
	for i := range 80 {
		ev := e.event("share", i)
		ids = append(ids, ev.Ticket)
		e.confirm(t, ev)
	}
	e.waitRows(t, len(ids))
	e.waitConsumed(t)
	e.checkExactlyOnce(t, ids)
	p1 := counterValue(t, m1, "tms_allocator_processed_total", subjects.TicketCreated)
	p2 := counterValue(t, m2, "tms_allocator_processed_total", subjects.TicketCreated)
	if p1 == 0 || p2 == 0 || p1+p2 != float64(len(ids)) {
		t.Errorf("allocators wrote %v and %v of %d", p1, p2, len(ids))
	}
	commits.mu.Lock()
	defer commits.mu.Unlock()
	for _, id := range ids {
		if n := commits.n[id]; n != 1 {
			t.Errorf("ticket %s written %d times", id, n)
		}
	}
}

// TestAllocatorOrderAndDuplicates: a cancel that is applied before its
// create wins (the create finds the cancelled row), a ticket's record seen
// twice is one row, and holds and minutes freed without a ticket are
// acked with nothing written.
func TestAllocatorOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	// The release of a ticket whose records aged out is a Create; a
	// create record after it comes as the redelivery of an older one
	// would.
	early := e.event("early", 0)
	e.release(t, early)
	e.confirm(t, early)

	dup := e.event("dup", 1)
	e.confirm(t, dup)
	e.confirm(t, dup) // the same record again, over itself

	held := e.event("held", 2)
	e.hold(t, held)
	freed := e.event("freed", 3)
	e.write(t, e.kv(), slotKey(freed), func(prev uint64) any {
		return subjects.SlotRecord{State: subjects.SlotReleased, Prev: prev}
	})

	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 1, metrics: metrics})
	e.waitRows(t, 2)
	e.waitConsumed(t)
	if s := e.status(t, early.Ticket); s != subjects.StatusCancelled {
		t.Errorf("cancel-first ticket is %q, want cancelled", s)
	}
	if s := e.status(t, dup.Ticket); s != subjects.StatusAllocated {
		t.Errorf("duplicated ticket is %q, want allocated", s)
	}
	if n := e.rows(t); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	if n := e.mustQuery(t, `SELECT count(*) FROM slots WHERE time = $1 AND available = 'available'`, early.SlotTime); n != 1 {
		t.Errorf("the cancelled ticket's slot is not available (%d)", n)
	}
	for label, want := range map[string]float64{"held": 1, "freed": 1, subjects.TicketCreated: 3, subjects.TicketCancelled: 1} {
		if got := counterValue(t, metrics, "tms_allocator_processed_total", label); got != want {
			t.Errorf("processed{%s} = %v, want %v", label, got, want)
		}
	}
}

// deadLetter is one message of the dead-letter stream.
type deadLetter struct{ subject, reason, original string }

// deadLetters reads back the dead-letter stream once it holds want
// messages.
func (e *allocEnv) deadLetters(t *testing.T, want int) []deadLetter {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	s, err := e.js.Stream(ctx, subjects.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(want)
	}, fmt.Sprintf("%d dead letters", want))
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.FetchNoWait(want + 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []deadLetter
	for m := range batch.Messages() {
		dl := deadLetter{subject: m.Subject(), reason: m.Headers().Get(subjects.HeaderDeadLetterReason),
			original: m.Headers().Get(subjects.HeaderOriginalSubject)}
		if dl.original == "" || m.Headers().Get(subjects.HeaderOriginalSequence) == "" {
			t.Errorf("dead letter %s lacks the original subject or sequence: %v", m.Subject(), m.Headers())
		}
		got = append(got, dl)
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	return got
}

// TestAllocatorDeadLetters: records that can never be written end in the
// dead-letter stream with a reason, under their ticket's dead-letter
// subject when the key names a tenant and the body a ticket id, and
// nothing of them is written.
func TestAllocatorDeadLetters(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 2, metrics: metrics})

	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type badCase struct {
		name   string
		kv     jetstream.KeyValue
		key    string
		body   []byte
		ticket string // the dead letter's ticket; "": DeadLetterInvalid
		tenant string // the dead letter's tenant, when not e's
	}
	var cases []badCase
	// mutated is case i: the confirmed record of ticket i, in its own
	// minute, changed by edit.
	mutated := func(name string, i int, edit func(*subjects.SlotRecord)) badCase {
		ev := e.event("bad", i)
		rec := subjects.ConfirmedRecord(ev, 0)
		edit(&rec)
		return badCase{name: name, kv: e.kv(), key: slotKey(ev), body: marshal(rec), ticket: rec.Ticket}
	}
	withoutTicket := func(c badCase) badCase { c.ticket = ""; return c }
	keyOf := func(i int) string { return slotKey(e.event("bad", i)) }
	ticketOf := func(i int) string { return e.event("bad", i).Ticket }
	otherMinute := e.event("bad", 1)
	otherMinute.SlotTime = otherMinute.SlotTime.Add(time.Hour)
	otherTicket, _ := subjects.NewSlotTicketID(otherMinute.Agent, otherMinute.SlotTime, nonce("other", 1))
	other := "nosuchtenant"
	unknown := e.event("bad", 30)
	unknown.Tenant = other
	cases = append(cases,
		badCase{name: "not json", kv: e.kv(), key: keyOf(0), body: []byte("{not json")},
		badCase{name: "unknown field", kv: e.kv(), key: keyOf(1),
			body:   []byte(strings.Replace(string(marshal(subjects.ConfirmedRecord(e.event("bad", 1), 0))), "{", `{"surprise":1,`, 1)),
			ticket: ticketOf(1)},
		badCase{name: "trailing data", kv: e.kv(), key: keyOf(2),
			body: append(marshal(subjects.ConfirmedRecord(e.event("bad", 2), 0)), []byte(" {}")...), ticket: ticketOf(2)},
		mutated("tenant mismatch", 3, func(r *subjects.SlotRecord) { r.Tenant = other }),
		mutated("agent mismatch", 4, func(r *subjects.SlotRecord) { r.Agent = "aother" }),
		mutated("minute mismatch", 5, func(r *subjects.SlotRecord) { r.SlotTime = r.SlotTime.Add(time.Minute) }),
		mutated("ticket of another slot", 6, func(r *subjects.SlotRecord) { r.Ticket = otherTicket }),
		withoutTicket(mutated("ticket of an earlier version", 7, func(r *subjects.SlotRecord) { r.Ticket = "tabcdefghijklmnopqrst" })),
		mutated("bad type", 8, func(r *subjects.SlotRecord) { r.Type = "PLATINUM" }),
		mutated("bad state", 9, func(r *subjects.SlotRecord) { r.State = "deleted" }),
		mutated("bad deadline", 10, func(r *subjects.SlotRecord) { r.Deadline = r.Deadline.Add(time.Minute) }),
		mutated("released without cancelled_at", 11, func(r *subjects.SlotRecord) { r.State = subjects.SlotReleased }),
		mutated("after the window", 12, func(r *subjects.SlotRecord) {
			r.CreatedAt = r.SlotTime.Add(-2*time.Hour + time.Second)
			r.Deadline = r.CreatedAt.Add(2 * time.Hour)
		}),
		badCase{name: "hold without an expiry", kv: e.kv(), key: keyOf(13),
			body: marshal(subjects.SlotRecord{State: subjects.SlotHeld, Type: subjects.Gold, CreatedAt: allocT0})},
		badCase{name: "not a slot key", kv: e.kv(), key: "junk." + e.ten.ID, body: marshal(subjects.ConfirmedRecord(e.event("bad", 14), 0))},
	)
	ghost := e.event("bad", 15)
	ghost.Agent = "aghost"
	ghost.Ticket, _ = subjects.NewSlotTicketID(ghost.Agent, ghost.SlotTime, nonce("ghost", 15))
	cases = append(cases,
		badCase{name: "agent the tenant does not have", kv: e.kv(), key: slotKey(ghost),
			body: marshal(subjects.ConfirmedRecord(ghost, 0)), ticket: ghost.Ticket},
		badCase{name: "unknown tenant", kv: e.kvs[subjects.SlotShard(other, e.shards)], key: slotKey(unknown),
			body: marshal(subjects.ConfirmedRecord(unknown, 0)), ticket: unknown.Ticket, tenant: other},
	)
	ctx := testkit.Context(t, 30*time.Second)
	for _, c := range cases {
		if _, err := c.kv.Put(ctx, c.key, c.body); err != nil {
			t.Fatalf("%s: put: %v", c.name, err)
		}
	}
	// A delete marker, which tms never writes.
	delKey := keyOf(16)
	if err := e.kv().Delete(ctx, delKey); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, badCase{name: "delete marker", kv: e.kv(), key: delKey})
	// An oversize record: the bucket refuses one, unless an operator
	// raised the stream's limit (after the allocator opened the bucket).
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	stream, err := e.js.Stream(ctx, subjects.SlotStream(shard))
	if err != nil {
		t.Fatal(err)
	}
	scfg := stream.CachedInfo().Config
	scfg.MaxMsgSize = 2 * subjects.MaxSlotRecordBytes
	if _, err := e.js.UpdateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	big := subjects.ConfirmedRecord(e.event("bad", 17), 0)
	big.Nonce = strings.Repeat("x", subjects.MaxSlotRecordBytes)
	oversize := badCase{name: "oversize", kv: e.kv(), key: keyOf(17), body: marshal(big), ticket: big.Ticket}
	if _, err := e.kv().Put(ctx, oversize.key, oversize.body); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, oversize)

	got := e.deadLetters(t, len(cases))
	e.waitConsumed(t)
	byOriginal := map[string][]deadLetter{}
	for _, dl := range got {
		byOriginal[dl.original] = append(byOriginal[dl.original], dl)
	}
	for _, c := range cases {
		original := "$KV." + c.kv.Bucket() + "." + c.key
		want := subjects.DeadLetterInvalid
		if c.ticket != "" {
			tenant := c.tenant
			if tenant == "" {
				tenant = e.ten.ID
			}
			want = subjects.DeadLetterSubject(tenant, c.ticket)
		}
		dls := byOriginal[original]
		if len(dls) != 1 || dls[0].subject != want || dls[0].reason == "" {
			t.Errorf("%s: dead letters of %s: %+v, want one on %s with a reason", c.name, original, dls, want)
		}
	}
	if len(got) != len(cases) {
		t.Errorf("%d dead letters, want %d: %+v", len(got), len(cases), got)
	}
	if n := e.rows(t); n != 0 {
		t.Errorf("%d ticket rows written from bad records", n)
	}
	if v := counterValue(t, metrics, "tms_allocator_dead_lettered_total", "unknown_tenant"); v != 1 {
		t.Errorf("dead_lettered{unknown_tenant} = %v, want 1", v)
	}
}

// TestAllocatorConflict: ticket A is released and its minute retaken by
// B (through a hold), and B's record is handled while A's release waits
// (another process holds it, stalled): the worker walks B's key back to
// A's released record, applies it and writes B. A real double booking (C
// confirmed over the live B) ends in the dead-letter stream.
func TestAllocatorConflict(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	ctx := testkit.Context(t, 60*time.Second)
	a := e.event("holdera", 0)
	e.confirm(t, a)
	// A long ack wait: the release held below must not come back by
	// itself.
	stop := e.start(t, allocOpts{concurrency: 1, ackWait: 30 * time.Second})
	e.waitRows(t, 1)
	e.waitConsumed(t)
	stop()

	b := e.event("retakerb", 0)
	e.release(t, a)
	e.hold(t, b)
	e.confirm(t, b)
	// A stalled process took A's release: B's records go to the worker
	// below while it waits.
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	cons, err := e.js.Consumer(ctx, subjects.SlotStream(shard), subjects.AllocatorConsumer(shard))
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var stalled jetstream.Msg
	for m := range fetched.Messages() {
		stalled = m
	}
	if stalled == nil {
		t.Fatalf("no record fetched: %v", fetched.Error())
	}
	if rec, err := subjects.DecodeSlotRecord(slotKey(a), stalled.Data(), subjects.CheckWritable); err != nil ||
		rec.State != subjects.SlotReleased || rec.Ticket != a.Ticket {
		t.Fatalf("fetched %+v (%v), want A's release", rec, err)
	}

	bWritten := make(chan struct{})
	var once sync.Once
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 2, metrics: metrics, ackWait: 30 * time.Second,
		after: func(ticket string) {
			if ticket == b.Ticket {
				once.Do(func() { close(bWritten) })
			}
		}})
	select {
	case <-bWritten:
	case <-ctx.Done():
		t.Fatal("B was not written while A's release waited")
	}
	if s := e.status(t, a.Ticket); s != subjects.StatusCancelled {
		t.Errorf("A is %q once B is written, before its release's own delivery; want cancelled", s)
	}
	if err := stalled.Nak(); err != nil { // the stalled process gives it back
		t.Fatal(err)
	}
	e.waitRows(t, 2)
	e.waitConsumed(t)
	if s := e.status(t, a.Ticket); s != subjects.StatusCancelled {
		t.Errorf("A is %q, want cancelled", s)
	}
	if s := e.status(t, b.Ticket); s != subjects.StatusAllocated {
		t.Errorf("B is %q, want allocated", s)
	}
	if n := e.mustQuery(t, `SELECT count(*) FROM slots WHERE time = $1 AND available = 'unavailable'`, b.SlotTime); n != 1 {
		t.Errorf("B's slot is not unavailable (%d)", n)
	}
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: B waited for A's release instead of applying it", got)
	}

	c := e.event("doublec", 0)
	e.confirm(t, c)
	got := e.deadLetters(t, 1)
	if len(got) != 1 || got[0].subject != subjects.DeadLetterSubject(e.ten.ID, c.Ticket) ||
		!strings.Contains(got[0].reason, b.Ticket) {
		t.Fatalf("double booking not dead-lettered naming B: %+v", got)
	}
	e.waitConsumed(t)
	if s := e.status(t, c.Ticket); s != "" {
		t.Errorf("double-booked ticket written as %q", s)
	}
	if s := e.status(t, b.Ticket); s != subjects.StatusAllocated {
		t.Errorf("B is %q after the refused double booking", s)
	}
	if got := counterValue(t, metrics, "tms_allocator_dead_lettered_total", "double_booking"); got != 1 {
		t.Errorf("dead_lettered{double_booking} = %v, want 1", got)
	}
}

// TestAllocatorCreateAfterItsRelease: A's create comes to a worker after
// its minute was released and taken by B, whose row is already written
// (as a redelivery after a crash would bring it): the worker finds A's
// own release in the records that followed A's, applies it, and the
// create has nothing left to do, without a retry.
func TestAllocatorCreateAfterItsRelease(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	a := e.event("firsta", 0)
	b := e.event("thenb", 0)
	e.confirm(t, a)
	e.release(t, a)
	e.confirm(t, b)
	if err := e.tickets.ApplyCreated(testkit.Context(t, 10*time.Second), e.ten, b); err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 1, metrics: metrics})
	e.waitRows(t, 2)
	e.waitConsumed(t)
	if s := e.status(t, a.Ticket); s != subjects.StatusCancelled {
		t.Errorf("A is %q, want cancelled", s)
	}
	if s := e.status(t, b.Ticket); s != subjects.StatusAllocated {
		t.Errorf("B is %q, want allocated", s)
	}
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "conflict"); got != 0 {
		t.Errorf("failed{conflict} = %v: A's create waited for its own release instead of applying it", got)
	}
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.TicketCreated); got != 2 {
		t.Errorf("processed{created} = %v, want 2", got)
	}
}

// TestAllocatorConsumers: NewAllocator opens every shard's bucket with
// the configured record age (creating the ones missing), keeps no
// TICKETS stream, and gives each shard's stream (limits retention) one
// durable consumer of that shard's records that acks explicitly, starts
// from the first record and never gives up on one; the parked stream
// keeps its records until written (no age, deleted by the ack) and has
// one such consumer too, with room for every parked record.
func TestAllocatorConsumers(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	ctx := testkit.Context(t, 30*time.Second)
	shards := e.shards + 1 // one bucket the allocator creates
	_, err := workers.NewAllocator(ctx, workers.AllocatorConfig{JS: e.js, Registry: e.reg, Tickets: e.tickets,
		Shards: shards, SlotMaxAge: 3 * time.Hour, AckWait: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range shards {
		kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(i))
		if err != nil {
			t.Fatalf("bucket %d: %v", i, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != 3*time.Hour || st.History() != subjects.SlotHistory {
			t.Errorf("bucket %d: max age %s, history %d; want 3h and %d", i, st.TTL(), st.History(), subjects.SlotHistory)
		}
		s, err := e.js.Stream(ctx, subjects.SlotStream(i))
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Retention; r != jetstream.LimitsPolicy {
			t.Errorf("stream %d: retention %s, want limits", i, r)
		}
		info, err := e.consumerInfo(ctx, i)
		if err != nil {
			t.Fatalf("consumer of shard %d: %v", i, err)
		}
		c := info.Config
		if c.Durable != subjects.AllocatorConsumer(i) || c.FilterSubject != subjects.SlotStreamSubjects(i) ||
			c.AckPolicy != jetstream.AckExplicitPolicy || c.DeliverPolicy != jetstream.DeliverAllPolicy ||
			c.MaxDeliver != -1 || c.AckWait != 7*time.Second || c.MaxAckPending <= 0 {
			t.Errorf("consumer of shard %d: %+v", i, c)
		}
	}
	parked, err := e.js.Stream(ctx, subjects.StreamParked)
	if err != nil {
		t.Fatalf("stream %s: %v", subjects.StreamParked, err)
	}
	if c := parked.CachedInfo().Config; c.MaxAge != 0 || c.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("parked stream: max age %s, retention %s; want none and work queue", c.MaxAge, c.Retention)
	}
	pinfo, err := e.parkedConsumerInfo(ctx)
	if err != nil {
		t.Fatalf("consumer of the parked stream: %v", err)
	}
	if c := pinfo.Config; c.Durable != subjects.ConsumerParked || c.AckPolicy != jetstream.AckExplicitPolicy ||
		c.DeliverPolicy != jetstream.DeliverAllPolicy || c.MaxDeliver != -1 || c.AckWait != 7*time.Second ||
		c.MaxAckPending < 100_000 {
		t.Errorf("consumer of the parked stream: %+v", c)
	}
	if _, err := e.js.Stream(ctx, "TMS_TICKETS"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s: %v, want none", "TMS_TICKETS", err)
	}
	if _, err := e.js.Stream(ctx, subjects.StreamDeadLetters); err != nil {
		t.Errorf("stream %s: %v", subjects.StreamDeadLetters, err)
	}
}

// TestAllocatorParksStalledTenant: two tenants in one shard, one of whose
// databases refuses connections. The healthy tenant's tickets all land
// while the other's wait; the shard consumer never holds the stalled
// tenant's records (its NumAckPending stays within the healthy flow:
// the stalled records are parked, not nak'ed, and the consumer is empty
// once the healthy tickets are in); once the database is back, every
// stalled ticket lands exactly once and the parked stream is empty.
func TestAllocatorParksStalledTenant(t *testing.T) {
	t.Parallel()
	const perTenant = 500
	e := newAllocEnvWith(t, envOpts{agents: 5, tenants: 2, shards: 1})
	healthy, stalled := e.tenants[0], e.tenants[1]
	ctx := testkit.Context(t, 120*time.Second)
	metrics := prometheus.NewRegistry()
	const concurrency, batch = 2, 20
	e.start(t, allocOpts{concurrency: concurrency, batchSize: batch, metrics: metrics, ackWait: 30 * time.Second})

	// Warm both pools: the outage must also kill live connections.
	ids := map[*allocTenant][]string{}
	for _, tn := range e.tenants {
		ev := tn.event("warm", 0)
		ids[tn] = append(ids[tn], ev.Ticket)
		tn.confirm(t, ev)
		tn.waitRows(t, 1)
	}
	restore := testkit.RefuseConnections(t, stalled.ten.DBName)

	// The shard consumer's ack pending, sampled while the tickets flow.
	var maxAckPending int
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if info, err := e.consumerInfo(ctx, 0); err == nil {
				maxAckPending = max(maxAckPending, info.NumAckPending)
			}
			select {
			case <-stopSampling:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	for i := 1; i <= perTenant; i++ {
		for _, tn := range []*allocTenant{stalled, healthy} {
			ev := tn.event("flow", i)
			ids[tn] = append(ids[tn], ev.Ticket)
			tn.confirm(t, ev)
		}
	}
	healthy.waitRows(t, len(ids[healthy]))
	testkit.Eventually(t, 30*time.Second, func() bool {
		info, err := e.consumerInfo(ctx, 0)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, "the shard's consumer empty while the stalled tenant is still down")
	close(stopSampling)
	<-sampled
	// What one process may hold of the healthy flow is a pull buffer
	// (64) and its records in flight (concurrency x batch), twice that
	// for slack; the stalled tenant's 500 would come on top.
	if bound := 2 * (64 + concurrency*batch); maxAckPending > bound {
		t.Errorf("shard consumer ack pending reached %d, want at most %d", maxAckPending, bound)
	}
	if _, err := stalled.query(t, `SELECT count(*) FROM tickets`); err == nil {
		t.Fatal("the stalled database answered: no outage")
	}
	if n := e.parkedMsgs(t); n != perTenant {
		t.Fatalf("%d parked records, want the stalled tenant's %d", n, perTenant)
	}
	healthy.checkExactlyOnce(t, ids[healthy])

	restore()
	stalled.waitRows(t, len(ids[stalled]))
	e.waitConsumed(t)
	stalled.checkExactlyOnce(t, ids[stalled])
	healthy.checkExactlyOnce(t, ids[healthy])
	if n := e.parkedMsgs(t); n != 0 {
		t.Errorf("%d parked records left once written", n)
	}
	if got := counterValue(t, metrics, "tms_allocator_parked_total", subjects.TicketCreated); got < perTenant {
		t.Errorf("parked{created} = %v, want at least %d", got, perTenant)
	}
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.TicketCreated); got != 2*(perTenant+1) {
		t.Errorf("processed{created} = %v, want %d", got, 2*(perTenant+1))
	}
}

// TestAllocatorParkedOutlivesSlotAge: a tenant database away for longer
// than the slot buckets keep a record loses no ticket. With a record age
// of two seconds (the buckets created by the allocator with its
// SlotMaxAge), tickets confirmed while the database refuses connections
// are parked; the slot stream then drops every one of them; once the
// database is back, every ticket lands exactly once from the parked
// stream.
func TestAllocatorParkedOutlivesSlotAge(t *testing.T) {
	t.Parallel()
	const age, n = 2 * time.Second, 50
	e := newAllocEnvWith(t, envOpts{agents: 2, tenants: 1, openedByAllocator: true})
	ctx := testkit.Context(t, 60*time.Second)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 2, slotMaxAge: age, metrics: metrics})
	e.openBuckets(t)
	st, err := e.kv().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != age {
		t.Fatalf("slot bucket created with a max age of %s, want %s", st.TTL(), age)
	}

	restore := testkit.RefuseConnections(t, e.ten.DBName)
	var ids []string
	var evs []subjects.TicketEvent
	for i := range n {
		ev := e.event("aged", i)
		ids, evs = append(ids, ev.Ticket), append(evs, ev)
		e.confirm(t, ev)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return e.parkedMsgs(t) == n }, fmt.Sprintf("%d parked records", n))
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	testkit.Eventually(t, 20*time.Second, func() bool { return e.streamMsgs(t, shard) == 0 },
		"every slot record aged out of the bucket")
	for _, ev := range []subjects.TicketEvent{evs[0], evs[n-1]} {
		if _, err := e.kv().Get(ctx, slotKey(ev)); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("slot of %s after its age: %v, want no record", ev.Ticket, err)
		}
	}
	if _, err := e.query(t, `SELECT count(*) FROM tickets`); err == nil {
		t.Fatal("the database answered: no outage")
	}
	// What a look-up reads once the slot record is gone, with Postgres
	// down: the last parked message of the ticket (a direct get).
	parked, err := e.js.Stream(ctx, subjects.StreamParked)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []subjects.TicketEvent{evs[0], evs[n-1]} {
		m, err := parked.GetLastMsgForSubject(ctx, subjects.ParkedSubject(ev.Tenant, ev.Ticket))
		if err != nil {
			t.Fatalf("parked record of %s: %v", ev.Ticket, err)
		}
		rec, err := subjects.DecodeParkedRecord(m.Subject, m.Header.Get(subjects.HeaderOriginalSubject), m.Data)
		if err != nil || rec.Event().Event != subjects.TicketCreated || rec.Ticket != ev.Ticket || !rec.SlotTime.Equal(ev.SlotTime) {
			t.Fatalf("parked record of %s reads %+v, %v", ev.Ticket, rec, err)
		}
	}

	restore()
	e.waitRows(t, n)
	e.waitConsumed(t)
	e.checkExactlyOnce(t, ids)
	if m := e.parkedMsgs(t); m != 0 {
		t.Errorf("%d parked records left once written", m)
	}
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.TicketCreated); got != n {
		t.Errorf("processed{created} = %v, want %d", got, n)
	}
}
