package workers_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tms/ops/jskit"
	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
)

// logRecorder is a slog handler that passes records on to next and
// keeps their messages, for a test to wait for a line.
type logRecorder struct {
	next slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newLogRecorder(t testing.TB) (*slog.Logger, func(msg string) int) {
	r := logRecorder{next: testkit.Logger(t).Handler(), mu: &sync.Mutex{}, msgs: &[]string{}}
	count := func(msg string) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, m := range *r.msgs {
			if m == msg {
				n++
			}
		}
		return n
	}
	return slog.New(r), count
}

func (r logRecorder) Enabled(ctx context.Context, l slog.Level) bool { return r.next.Enabled(ctx, l) }
func (r logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	r.mu.Lock()
	*r.msgs = append(*r.msgs, rec.Message)
	r.mu.Unlock()
	return r.next.Handle(ctx, rec)
}
func (r logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{next: r.next.WithAttrs(as), mu: r.mu, msgs: r.msgs}
}
func (r logRecorder) WithGroup(g string) slog.Handler {
	return logRecorder{next: r.next.WithGroup(g), mu: r.mu, msgs: r.msgs}
}

// lockTickets holds an exclusive lock on tn's tickets table, so every
// write of the allocators to it blocks, until the returned release.
func (tn *allocTenant) lockTickets(t testing.TB) (release func()) {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, tn.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = tx.Rollback(rctx)
			_ = conn.Close(rctx)
		})
	}
	t.Cleanup(release)
	return release
}

// putSettings writes the allocators' live settings.
func (e *allocEnv) putSettings(t testing.TB, body []byte) uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := jskit.OpenBucket(ctx, e.js, subjects.OpsBucketConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, subjects.KeyAllocatorSettings, body)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func settings(t testing.TB, n int) []byte {
	t.Helper()
	b, err := subjects.EncodeAllocatorSettings(subjects.AllocatorSettings{Concurrency: n, UpdatedAt: time.Now().UTC(),
		UpdatedBy: "test@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// workersInfo asks every allocator process for its info and gathers the
// answers until want arrived.
func (e *allocEnv) workersInfo(t testing.TB, want int) []subjects.WorkerInfo {
	t.Helper()
	nc := e.nats.Connect(t)
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subjects.SubjectWorkersInfo, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var got []subjects.WorkerInfo
	for len(got) < want {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("%d of %d worker info answers: %v", len(got), want, err)
		}
		w, err := subjects.DecodeWorkerInfo(m.Data)
		if err != nil {
			t.Fatalf("worker info %q: %v", m.Data, err)
		}
		got = append(got, w)
	}
	return got
}

// TestAllocatorLiveConcurrency: tenants whose tickets tables are locked
// from the test (every write blocks) show how many batches an allocator
// writes at once. At concurrency 1 never more than one; once the live
// setting says 4, four; a setting that does not decode changes nothing;
// released, every ticket lands exactly once; the setting deleted, the
// flag's value is back.
func TestAllocatorLiveConcurrency(t *testing.T) {
	t.Parallel()
	const nTenants, perTenant, batch = 5, 5, 5
	e := newAllocEnv(t, 1, nTenants)
	metrics := prometheus.NewRegistry()
	logger, logged := newLogRecorder(t)
	a := e.allocator(t, allocOpts{concurrency: 1, batchSize: batch, batchWait: -1, metrics: metrics,
		ackWait: 30 * time.Second, edit: func(c *workers.AllocatorConfig) {
			c.Logger, c.Command, c.Version = logger, "worker", "v-test"
		}})
	if n, src, rev := a.Concurrency(); n != 1 || src != subjects.ConcurrencyFromFlag || rev != 0 {
		t.Fatalf("before Run: concurrency %d from %s rev %d, want 1 from the flag", n, src, rev)
	}
	var releases []func()
	for _, tn := range e.tenants {
		releases = append(releases, tn.lockTickets(t))
	}
	testkit.Run(t, "Allocator", a.Run)
	// On a failure, the locks go before the allocator is stopped (it
	// finishes the writes it has begun).
	t.Cleanup(func() {
		for _, release := range releases {
			release()
		}
	})

	// The most batches written at once, sampled until stop.
	var most atomic.Int64
	sample := func(stop <-chan struct{}) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				w := int64(a.Info().Writing)
				for {
					m := most.Load()
					if w <= m || most.CompareAndSwap(m, w) {
						break
					}
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		return done
	}
	stopSampling := make(chan struct{})
	sampled := sample(stopSampling)

	ids := map[*allocTenant][]string{}
	for i := range perTenant {
		for _, tn := range e.tenants {
			ev := tn.event("scale", i)
			ids[tn] = append(ids[tn], ev.Ticket)
			tn.confirm(t, ev)
		}
	}
	// One batch blocked on its lock, and the rest of the records waiting
	// behind the bound of one batch in flight.
	testkit.Eventually(t, 10*time.Second, func() bool {
		info := a.Info()
		return info.Writing == 1 && info.InFlight == batch
	}, "one batch being written at concurrency 1")
	waiters := func() int {
		return e.mustQuery(t, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
			WHERE NOT l.granted AND s.datname = ANY($1)`, e.dbNames())
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return waiters() == 1 }, "one write waiting for its lock")
	close(stopSampling)
	<-sampled
	if m := most.Load(); m != 1 {
		t.Fatalf("at concurrency 1, %d batches written at once", m)
	}

	rev := e.putSettings(t, settings(t, 4))
	testkit.Eventually(t, 10*time.Second, func() bool {
		n, src, got := a.Concurrency()
		return n == 4 && src == subjects.ConcurrencyFromOps && got == rev
	}, "the live setting in force")
	testkit.Eventually(t, 10*time.Second, func() bool { return a.Info().Writing == 4 }, "four batches written at once")
	testkit.Eventually(t, 10*time.Second, func() bool { return waiters() == 4 }, "four writes waiting for their locks")
	if got := gauge(t, metrics, "tms_allocator_concurrency"); got != 4 {
		t.Errorf("tms_allocator_concurrency = %v, want 4", got)
	}
	if got := gauge(t, metrics, "tms_allocator_writing"); got != 4 {
		t.Errorf("tms_allocator_writing = %v, want 4", got)
	}
	infos := e.workersInfo(t, 1)
	if w := infos[0]; w.ID != a.Info().ID || w.Concurrency != 4 || w.ConcurrencySource != subjects.ConcurrencyFromOps ||
		w.SettingsRevision != rev || w.Writing != 4 || w.BatchSize != batch || w.Command != "worker" || w.Version != "v-test" {
		t.Errorf("worker info %+v, want concurrency 4 from ops at revision %d, 4 writing, batch %d", w, rev, batch)
	}

	// Out of bounds, and not JSON: ignored, the setting in force kept.
	for i, bad := range [][]byte{[]byte(`{"concurrency":0,"updated_at":"2031-01-01T00:00:00Z"}`), []byte("{nope")} {
		e.putSettings(t, bad)
		testkit.Eventually(t, 10*time.Second, func() bool {
			return logged("allocator settings ignored; keeping the concurrency in force") == i+1
		}, "the invalid setting logged")
		if n, src, got := a.Concurrency(); n != 4 || src != subjects.ConcurrencyFromOps || got != rev {
			t.Fatalf("after an invalid setting: concurrency %d from %s rev %d, want 4 from ops rev %d", n, src, got, rev)
		}
	}

	for _, release := range releases {
		release()
	}
	for _, tn := range e.tenants {
		tn.waitRows(t, perTenant)
	}
	e.waitConsumed(t)
	for _, tn := range e.tenants {
		tn.checkExactlyOnce(t, ids[tn])
	}
	if n := e.parkedMsgs(t); n != 0 {
		t.Errorf("%d records parked: a write timed out", n)
	}
	if got := logged("allocator concurrency changed"); got != 1 {
		t.Errorf("%d lines logged for the concurrency changes, want 1 so far", got)
	}

	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.BucketOps)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, subjects.KeyAllocatorSettings); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		n, src, got := a.Concurrency()
		return n == 1 && src == subjects.ConcurrencyFromFlag && got == 0
	}, "the flag's concurrency back")
	testkit.Eventually(t, 10*time.Second, func() bool { return gauge(t, metrics, "tms_allocator_concurrency") == 1 },
		"tms_allocator_concurrency back to 1")
	if got := logged("allocator concurrency changed"); got != 2 {
		t.Errorf("%d lines logged for the concurrency changes, want 2", got)
	}

	// At 1 again, more tickets still land, one batch at a time.
	most.Store(0)
	stopSampling = make(chan struct{})
	sampled = sample(stopSampling)
	for _, tn := range e.tenants {
		ev := tn.event("after", perTenant)
		ids[tn] = append(ids[tn], ev.Ticket)
		tn.confirm(t, ev)
	}
	for _, tn := range e.tenants {
		tn.waitRows(t, perTenant+1)
	}
	e.waitConsumed(t)
	close(stopSampling)
	<-sampled
	if m := most.Load(); m > 1 {
		t.Errorf("back at concurrency 1, %d batches written at once", m)
	}
	for _, tn := range e.tenants {
		tn.checkExactlyOnce(t, ids[tn])
	}
}

// dbNames is the tenant databases of e.
func (e *allocEnv) dbNames() []string {
	var names []string
	for _, tn := range e.tenants {
		names = append(names, tn.ten.DBName)
	}
	return names
}

// TestAllocatorWorkersInfo: every allocator process answers the workers'
// info request (a plain subscription, not a queue group), each with its
// own id and its settings; the answers decode with the contract's strict
// decoder.
func TestAllocatorWorkersInfo(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	edit := func(c *workers.AllocatorConfig) { c.Command, c.Version = "serve", "v1.2.3" }
	a1 := e.allocator(t, allocOpts{concurrency: 3, batchSize: 7, edit: edit})
	a2 := e.allocator(t, allocOpts{concurrency: 5, batchSize: 7, edit: edit})
	testkit.Run(t, "Allocator 1", a1.Run)
	testkit.Run(t, "Allocator 2", a2.Run)
	var evs []string
	for i := range 4 {
		ev := e.event("info", i)
		evs = append(evs, ev.Ticket)
		e.confirm(t, ev)
	}
	e.waitRows(t, len(evs))
	e.waitConsumed(t)

	got := e.workersInfo(t, 2)
	slices.SortFunc(got, func(x, y subjects.WorkerInfo) int { return x.Concurrency - y.Concurrency })
	var settled uint64
	for i, want := range []*workers.Allocator{a1, a2} {
		w, local := got[i], want.Info()
		if w.ID != local.ID || w.ID == "" || w.Host != local.Host || w.PID != local.PID || !w.Started.Equal(local.Started) {
			t.Errorf("answer %d: %+v, want the identity of %+v", i, w, local)
		}
		if w.Concurrency != local.Concurrency || w.ConcurrencySource != subjects.ConcurrencyFromFlag || w.SettingsRevision != 0 ||
			w.BatchSize != 7 || w.Command != "serve" || w.Version != "v1.2.3" || w.RateWindow != 10*time.Second ||
			w.Writing != 0 || w.InFlight != 0 || w.TenantsDown != 0 {
			t.Errorf("answer %d: %+v, want %+v", i, w, local)
		}
		settled += w.Settled
	}
	if got[0].ID == got[1].ID {
		t.Errorf("two processes answered with one id %q", got[0].ID)
	}
	if got[0].Concurrency != 3 || got[1].Concurrency != 5 {
		t.Errorf("concurrencies %d and %d, want 3 and 5", got[0].Concurrency, got[1].Concurrency)
	}
	if settled != uint64(len(evs)) {
		t.Errorf("%d records settled over both, want %d", settled, len(evs))
	}
}

// TestAllocatorReplayedDeadLetter: a dead letter put back on the parked
// stream by `tms ops dlq replay` that fails again is dead-lettered again,
// under its parked sequence: the stream keeps both dead letters instead
// of dropping the second as a duplicate of the first (and with it the
// record).
func TestAllocatorReplayedDeadLetter(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	metrics := prometheus.NewRegistry()
	e.start(t, allocOpts{concurrency: 2, metrics: metrics})
	ctx := testkit.Context(t, 30*time.Second)
	ev := e.event("replay", 0)
	if _, err := e.kv().Put(ctx, slotKey(ev), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	first := e.deadLetters(t, 1)
	s, err := e.js.Stream(ctx, subjects.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	replay := &nats.Msg{Subject: subjects.ParkedSubject(e.ten.ID, ev.Ticket), Data: dl.Data, Header: nats.Header{}}
	replay.Header.Set(subjects.HeaderOriginalSubject, dl.Header.Get(subjects.HeaderOriginalSubject))
	replay.Header.Set(subjects.HeaderOriginalSequence, dl.Header.Get(subjects.HeaderOriginalSequence))
	replay.Header.Set(subjects.HeaderReplayOf, "1")
	if _, err := e.js.PublishMsg(ctx, replay, jetstream.WithMsgID(subjects.ReplayMsgID(1)),
		jetstream.WithExpectStream(subjects.StreamParked)); err != nil {
		t.Fatal(err)
	}
	both := e.deadLetters(t, 2)
	if len(both) != 2 || both[1].original != first[0].original {
		t.Fatalf("dead letters %+v, want the first and its replay's, of the same original", both)
	}
	e.waitConsumed(t)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return counterValue(t, metrics, "tms_allocator_dead_lettered_total", "invalid") == 2
	}, "two dead letters counted")
}

// family is the metric family name of reg, nil when absent.
func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	if m := labelled(t, reg, name, label); m != nil {
		return m.GetGauge().GetValue()
	}
	return -1
}

// TestAllocatorOpsMetrics: the metrics of issue 11 exist from the start
// at zero, every labelled child included, and move: the latency histogram
// counts each ticket written, an outage counts database errors as
// unavailable and, through the parked records' retries, redeliveries,
// and shows in the parked consumer's backlog and oldest record until the
// database is back; a dead letter shows in the dead-letter depth.
func TestAllocatorOpsMetrics(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1, 1)
	metrics := prometheus.NewRegistry()
	a := e.allocator(t, allocOpts{concurrency: 3, metrics: metrics, edit: func(c *workers.AllocatorConfig) {
		c.StatsInterval = 20 * time.Millisecond
	}})
	consumers := []string{"parked"}
	for i := range e.shards {
		consumers = append(consumers, fmt.Sprintf("slots-%d", i))
	}
	for name, children := range map[string][]string{
		"tms_allocator_concurrency":                {""},
		"tms_allocator_writing":                    {""},
		"tms_allocator_redeliveries_total":         {""},
		"tms_dead_letters":                         {""},
		"tms_allocator_allocation_latency_seconds": {"created", "cancelled", "moved"},
		"tms_tenant_db_errors_total":               {"unavailable", "timeout", "conflict", "constraint", "other"},
		"tms_allocator_backlog_records":            consumers,
		"tms_allocator_oldest_unallocated_seconds": consumers,
	} {
		mf := family(t, metrics, name)
		if mf == nil {
			t.Errorf("%s not exposed before Run", name)
			continue
		}
		var got []string
		for _, m := range mf.GetMetric() {
			label := ""
			if len(m.GetLabel()) == 1 {
				label = m.GetLabel()[0].GetValue()
			}
			got = append(got, label)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			if name == "tms_allocator_concurrency" {
				v -= 3
			}
			if v != 0 {
				t.Errorf("%s{%s} = %v at the start", name, label, v)
			}
		}
		slices.Sort(got)
		slices.Sort(children)
		if !slices.Equal(got, children) {
			t.Errorf("%s children %q, want %q", name, got, children)
		}
	}
	testkit.Run(t, "Allocator", a.Run)

	var ids []string
	confirm := func(tag string, from, to int) {
		for i := from; i < to; i++ {
			ev := e.event(tag, i)
			ids = append(ids, ev.Ticket)
			e.confirm(t, ev)
		}
	}
	confirm("m", 0, 10)
	e.waitRows(t, 10)
	e.waitConsumed(t)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return histogramCount(t, metrics, "tms_allocator_allocation_latency_seconds", "created") == 10
	}, "ten allocations observed")

	restore := testkit.RefuseConnections(t, e.ten.DBName)
	confirm("m", 10, 15)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterValue(t, metrics, "tms_tenant_db_errors_total", "unavailable") >= 1 &&
			plainCounter(t, metrics, "tms_allocator_redeliveries_total") >= 1 &&
			gaugeValue(t, metrics, "tms_allocator_backlog_records", "parked") >= 1 &&
			gaugeValue(t, metrics, "tms_allocator_oldest_unallocated_seconds", "parked") > 0
	}, "the outage in the errors, redeliveries and parked backlog")
	if got := histogramCount(t, metrics, "tms_allocator_allocation_latency_seconds", "created"); got != 10 {
		t.Errorf("%d allocations observed during the outage, want still 10", got)
	}
	restore()
	e.waitRows(t, 15)
	e.waitConsumed(t)
	e.checkExactlyOnce(t, ids)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return histogramCount(t, metrics, "tms_allocator_allocation_latency_seconds", "created") == 15 &&
			gaugeValue(t, metrics, "tms_allocator_backlog_records", "parked") == 0 &&
			gaugeValue(t, metrics, "tms_allocator_oldest_unallocated_seconds", "parked") == 0
	}, "every allocation observed, the parked backlog empty")

	ctx := testkit.Context(t, 10*time.Second)
	if _, err := e.kv().Put(ctx, slotKey(e.event("bad", 99)), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return gauge(t, metrics, "tms_dead_letters") == 1 },
		"the dead letter counted")
}

// gates holds the writes of chosen tenants in BeforeCommit until their
// gate opens, and records which tenants reached it.
type gates struct {
	mu      sync.Mutex
	tenant  map[string]string // ticket -> tenant
	open    map[string]chan struct{}
	reached map[string]int
}

func (g *gates) before(ticket string) {
	g.mu.Lock()
	tenant := g.tenant[ticket]
	g.reached[tenant]++
	gate := g.open[tenant]
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
}

func (g *gates) reachedBy(tenant string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reached[tenant]
}

// held is the tenants whose writes wait at their gate now.
func (g *gates) held() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ts []string
	for tenant, n := range g.reached {
		if n > 0 && g.open[tenant] != nil {
			select {
			case <-g.open[tenant]:
			default:
				ts = append(ts, tenant)
			}
		}
	}
	slices.Sort(ts)
	return ts
}

func (g *gates) release(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open[tenant]:
	default:
		close(g.open[tenant])
	}
}

// TestAllocatorConcurrencyFalls: a fall of the live concurrency lets the
// batches being written finish, and the drainers that finish stop rather
// than take the next ready tenant: with four batches held and a fifth
// tenant waiting, a fall to 2 and two batches let go leave two being
// written and the fifth untouched until the others are done. Every
// ticket lands once.
func TestAllocatorConcurrencyFalls(t *testing.T) {
	t.Parallel()
	const nTenants, perTenant, batch = 5, 3, 10
	e := newAllocEnv(t, 1, nTenants)
	g := &gates{tenant: map[string]string{}, open: map[string]chan struct{}{}, reached: map[string]int{}}
	ids := map[*allocTenant][]string{}
	for _, tn := range e.tenants {
		g.open[tn.ten.ID] = make(chan struct{})
		for i := range perTenant {
			ev := tn.event("fall", i)
			ids[tn] = append(ids[tn], ev.Ticket)
			g.tenant[ev.Ticket] = tn.ten.ID
		}
	}
	a := e.allocator(t, allocOpts{concurrency: 4, batchSize: batch, batchWait: -1, before: g.before,
		ackWait: 30 * time.Second})
	testkit.Run(t, "Allocator", a.Run)
	t.Cleanup(func() {
		for _, tn := range e.tenants {
			g.release(tn.ten.ID)
		}
	})
	// All records in flight at once (15 of the 40 places), so that the
	// fifth tenant's queue is ready while four are held.
	for i := range perTenant {
		for _, tn := range e.tenants {
			tn.confirm(t, tn.event("fall", i))
		}
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		info := a.Info()
		return info.Writing == 4 && info.InFlight == nTenants*perTenant && len(g.held()) == 4
	}, "four batches held, every record in flight")
	held := g.held()
	var fifth *allocTenant
	for _, tn := range e.tenants {
		if !slices.Contains(held, tn.ten.ID) {
			fifth = tn
		}
	}

	e.putSettings(t, settings(t, 2))
	testkit.Eventually(t, 10*time.Second, func() bool { n, _, _ := a.Concurrency(); return n == 2 }, "the fall in force")
	if w := a.Info().Writing; w != 4 {
		t.Fatalf("%d batches being written right after the fall, want the 4 held to go on", w)
	}
	g.release(held[0])
	g.release(held[1])
	byID := map[string]*allocTenant{}
	for _, tn := range e.tenants {
		byID[tn.ten.ID] = tn
	}
	// Their batches (all their records, or the first of them) written;
	// what is left of them waits like the fifth tenant.
	byID[held[0]].waitRows(t, 1)
	byID[held[1]].waitRows(t, 1)
	testkit.Eventually(t, 10*time.Second, func() bool { return a.Info().Writing == 2 }, "two batches being written")
	if n := g.reachedBy(fifth.ten.ID); n != 0 {
		t.Fatalf("the fifth tenant's batch was started (%d writes) at concurrency 2 with two held", n)
	}
	if h := g.held(); len(h) != 2 || !slices.Contains(h, held[2]) || !slices.Contains(h, held[3]) {
		t.Fatalf("held %v, want the two not let go (%s, %s)", h, held[2], held[3])
	}

	for _, tn := range e.tenants {
		g.release(tn.ten.ID)
	}
	for _, tn := range e.tenants {
		tn.waitRows(t, perTenant)
	}
	e.waitConsumed(t)
	for _, tn := range e.tenants {
		tn.checkExactlyOnce(t, ids[tn])
	}
}
