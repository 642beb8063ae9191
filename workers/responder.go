package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
	"tms/workers/calendar"
)

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Registry *tenants.Registry // a request for an unknown tenant is 404 client_not_found
	Logger   *slog.Logger
	// Now is the clock (nil: time.Now). It also bounds the CreatedAt a
	// request may carry (within maxSkew of Now), and it ends holds: a hold
	// is busy while Now is before its HoldExpiresAt, in every responder's
	// calendar, with no write.
	Now func() time.Time
	// HoldTTL is how long a pending hold lives (0: 30s); whole seconds,
	// at least 1s, as tms serve's --hold-ttl.
	HoldTTL time.Duration
	// Shards is the slot shard count (0: subjects.DefaultSlotShards).
	Shards   int
	Replicas int
	// Concurrency bounds the requests handled at once per process (0: 64).
	Concurrency int
	// AgentsWait bounds how long a reserve or hold waits for the agents
	// watch to apply the agents revision the request carries (0:
	// subjects.DefaultBudget.AgentsWait, 1s); past it the answer is 503.
	// Keep it under the ingress's ETA timeout (subjects.Budget.Check), so
	// that the 503 arrives before the ingress gives up.
	AgentsWait time.Duration
	// Frozen is the frozen horizon of feasibility admission (0: 5
	// minutes; whole minutes, at least one): no accepted ticket whose
	// minute starts within it is moved, nor moved into it. At least a
	// minute, because a ticket may be created up to maxSkew ahead of the
	// responder's clock: its window then opens a minute after the
	// current one, and a move must never take it before that.
	Frozen  time.Duration
	Metrics prometheus.Registerer // may be nil
}

const (
	defaultHoldTTL     = 30 * time.Second
	defaultConcurrency = 64
	defaultFrozen      = 5 * time.Minute
	// kvTimeout bounds one KV round trip; requestTimeout one request.
	kvTimeout      = 5 * time.Second
	requestTimeout = 10 * time.Second
	// maxSkew is how far a request's CreatedAt may be from Now: the
	// ingress stamps it just before asking, so more means a broken clock
	// or a forged request.
	maxSkew = 5 * time.Second
	// searchTimeout bounds a search of a tenant's slot records for a
	// ticket nonce (takeover, release by nonce).
	searchTimeout = 5 * time.Second
	// maxAttempts bounds the writes one request tries when others keep
	// winning the race; each lost write marks a slot taken, so this is
	// reached only under heavy contention (the answer is then 503).
	maxAttempts = 64
	// maxRequestBytes bounds a request body; real ones are a few hundred
	// bytes, a reserve or confirm with a maximal ticket content (escaped
	// as JSON) up to some 64 KiB: the bound of the record it becomes.
	maxRequestBytes = subjects.MaxSlotRecordBytes
)

// Responder answers ETA requests for every tenant (request-reply on
// subjects.ETAAll, queue group subjects.QueueETA) and is the only writer of
// the slot buckets. Each tenant has an in-memory calendar fed by a watch on
// its shard bucket, by a watch on the agents bucket and by the responder's
// own writes; the calendar only proposes candidates, the revision-checked
// KV write decides (a create where the key was never written, else an
// update against the newest record's revision).
//
// A reserve or hold that carries an agents revision (the tenant's last
// agent write the ingress knows of) is answered only once the agents
// watch has applied that revision, so that it sees the agent just
// registered or made unavailable; a watch that does not get there within
// AgentsWait makes the answer 503, never one from an older calendar.
type Responder struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	registry *tenants.Registry
	log      *slog.Logger
	now      func() time.Time
	holdTTL  time.Duration
	frozen   int // minutes
	nShards  int
	shards   []jetstream.KeyValue
	agents   jetstream.KeyValue
	sem      chan struct{}
	metrics  *responderMetrics
	// agentsWait is ResponderConfig.AgentsWait; agentsApplied the
	// revision of the agents bucket the calendars have applied.
	agentsWait    time.Duration
	agentsApplied progress

	mu      sync.Mutex
	tenants map[string]*tenantCalendar

	loaded  []atomic.Bool // one per shard watch, then the agents watch
	ready   atomic.Bool
	hmu     sync.Mutex // guards closed and handlers.Add
	closed  bool
	handler sync.WaitGroup
	base    context.Context // Run's context, without its cancellation, for handlers

	// started is made on first use and closed when Run first serves, as
	// ready is set; unlike ready it stays closed once Run stops.
	started               chan struct{}
	makeStarted, didStart sync.Once
}

// tenantCalendar is one tenant's calendar and the lock that serialises it.
type tenantCalendar struct {
	shard int
	mu    sync.Mutex
	cal   *calendar.Calendar
}

// NewResponder opens the slot shard buckets, creating or updating them
// (jskit.OpenBucket: safe when several workers start at once), and opens
// the agents bucket (creating it if no tenants process has yet).
func NewResponder(ctx context.Context, cfg ResponderConfig) (*Responder, error) {
	if cfg.NC == nil || cfg.JS == nil || cfg.Registry == nil {
		return nil, fmt.Errorf("%w: NC, JS and Registry are required", ErrResponderConfig)
	}
	holdTTL := cfg.HoldTTL
	if holdTTL == 0 {
		holdTTL = defaultHoldTTL
	}
	if holdTTL < time.Second || holdTTL%time.Second != 0 {
		return nil, fmt.Errorf("%w: hold TTL %s is not a whole number of seconds >= 1s", ErrResponderConfig, holdTTL)
	}
	n := cfg.Shards
	if n == 0 {
		n = subjects.DefaultSlotShards
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: %d shards", ErrResponderConfig, n)
	}
	conc := cfg.Concurrency
	if conc <= 0 {
		conc = defaultConcurrency
	}
	agentsWait := cfg.AgentsWait
	if agentsWait == 0 {
		agentsWait = subjects.DefaultBudget.AgentsWait
	}
	if agentsWait < 0 {
		return nil, fmt.Errorf("%w: agents wait %s", ErrResponderConfig, agentsWait)
	}
	frozen := cfg.Frozen
	if frozen == 0 {
		frozen = defaultFrozen
	}
	if frozen < time.Minute || frozen%time.Minute != 0 {
		return nil, fmt.Errorf("%w: frozen horizon %s is not a whole number of minutes >= 1m", ErrResponderConfig, frozen)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	r := &Responder{
		nc: cfg.NC, js: cfg.JS, registry: cfg.Registry, now: now, holdTTL: holdTTL, nShards: n, frozen: int(frozen / time.Minute),
		log: log.With(slog.String("component", "eta_responder")), sem: make(chan struct{}, conc),
		tenants: make(map[string]*tenantCalendar), loaded: make([]atomic.Bool, n+1),
		base: context.Background(), agentsWait: agentsWait,
	}
	for i := 0; i < n; i++ {
		kctx, cancel := context.WithTimeout(ctx, ensureTimeout)
		kv, err := jskit.OpenBucket(kctx, cfg.JS, subjects.SlotBucketConfig(i, cfg.Replicas, 0))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("opening slot bucket %s: %w: %w", subjects.SlotBucket(i), ErrUnavailable, err)
		}
		// Moves are written as atomic batches (writePlacement).
		kctx, cancel = context.WithTimeout(ctx, ensureTimeout)
		err = jskit.EnableAtomicPublish(kctx, cfg.JS, jskit.KVStream(subjects.SlotBucket(i)))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("allowing atomic batches on bucket %s: %w: %w", subjects.SlotBucket(i), ErrUnavailable, err)
		}
		r.shards = append(r.shards, kv)
	}
	agents, err := openAgents(ctx, cfg.JS, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	r.agents = agents
	if cfg.Metrics != nil {
		if r.metrics, err = newResponderMetrics(cfg.Metrics, len(r.shards), r.strandedCount, r.utilisation); err != nil {
			return nil, err
		}
	}
	// The allocators of a worker publish events too, on the same registry.
	if err := registerEventMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	return r, nil
}

// openAgents opens subjects.BucketAgents, creating it with the
// configuration package tenants uses (subjects.AgentsBucketConfig) when
// this process is the first to need it.
func openAgents(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	kv, err := jskit.OpenBucket(kctx, js, subjects.AgentsBucketConfig(replicas))
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w: %w", subjects.BucketAgents, ErrUnavailable, err)
	}
	return kv, nil
}

// Ready reports whether the calendars are loaded and requests are served.
func (r *Responder) Ready() bool { return r.ready.Load() }

// Started is closed once Run first serves requests (the server has the
// subscription): Ready as a channel to wait on.
func (r *Responder) Started() <-chan struct{} { return r.startedChan() }

func (r *Responder) startedChan() chan struct{} {
	r.makeStarted.Do(func() { r.started = make(chan struct{}) })
	return r.started
}

// Run loads every calendar (one watch per shard bucket and one on the
// agents bucket), then answers requests until ctx is done; in-flight
// requests are finished before it returns nil.
func (r *Responder) Run(ctx context.Context) error {
	r.base = context.WithoutCancel(ctx)
	wctx, stopWatches := context.WithCancel(ctx)
	var watches sync.WaitGroup
	defer func() {
		stopWatches()
		watches.Wait()
	}()
	for i, kv := range r.shards {
		watches.Go(func() { r.watchLoop(wctx, kv, r.shardSink(i)) })
	}
	watches.Go(func() { r.watchLoop(wctx, r.agents, r.agentSink()) })

	tick := time.NewTicker(10 * time.Millisecond)
	for !r.allLoaded() {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil
		case <-tick.C:
		}
	}
	tick.Stop()

	sub, err := r.nc.QueueSubscribe(subjects.ETAAll, subjects.QueueETA, r.onMsg)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w: %w", subjects.ETAAll, ErrUnavailable, err)
	}
	// Ready only once the server has the interest: a request sent right
	// after would otherwise find no responders.
	if err := r.nc.FlushTimeout(kvTimeout); err != nil {
		r.log.Warn("flushing the subscription", slog.Any("err", err))
	}
	r.ready.Store(true)
	r.didStart.Do(func() { close(r.startedChan()) })
	r.log.Info("eta responder ready", slog.Int("shards", r.nShards), slog.Int("concurrency", cap(r.sem)))
	<-ctx.Done()
	r.ready.Store(false)
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		r.log.Warn("unsubscribing", slog.Any("err", err))
	}
	r.hmu.Lock()
	r.closed = true
	r.hmu.Unlock()
	r.handler.Wait()
	r.log.Info("eta responder stopped")
	return nil
}

func (r *Responder) allLoaded() bool {
	for i := range r.loaded {
		if !r.loaded[i].Load() {
			return false
		}
	}
	return true
}

// onMsg is the subscription callback. The library calls it serially, so
// it only hands the message to a bounded pool; while the pool is full it
// blocks, and further requests wait in the subscription's buffer.
func (r *Responder) onMsg(msg *nats.Msg) {
	r.sem <- struct{}{}
	r.hmu.Lock()
	if r.closed {
		r.hmu.Unlock()
		<-r.sem
		r.respond(msg, subjects.ETARefusal(subjects.ETACodeUnavailable, "", "responder stopping"))
		return
	}
	r.handler.Add(1)
	r.hmu.Unlock()
	go func() {
		defer r.handler.Done()
		defer func() { <-r.sem }()
		ctx, cancel := context.WithTimeout(r.base, requestTimeout)
		defer cancel()
		r.respond(msg, r.Handle(ctx, msg.Subject, msg.Data))
	}()
}

func (r *Responder) respond(msg *nats.Msg, reply subjects.ETAReply) {
	if msg.Reply == "" {
		return
	}
	b, err := json.Marshal(reply)
	if err != nil {
		r.log.Error("encoding reply", slog.Any("err", err))
		return
	}
	if err := msg.Respond(b); err != nil {
		r.log.Warn("replying", slog.String("subject", msg.Subject), slog.Any("err", err))
	}
}

// calendar returns a tenant's calendar, creating an empty one.
func (r *Responder) calendar(tenant string) *tenantCalendar {
	r.mu.Lock()
	defer r.mu.Unlock()
	tc, ok := r.tenants[tenant]
	if !ok {
		tc = &tenantCalendar{shard: subjects.SlotShard(tenant, r.nShards), cal: calendar.New(r.now())}
		tc.cal.SetFrozen(r.frozen)
		r.tenants[tenant] = tc
	}
	return tc
}

func (r *Responder) shardKV(tenant string) jetstream.KeyValue {
	return r.shards[subjects.SlotShard(tenant, r.nShards)]
}

// strandedCount is how many tickets, over every tenant this process
// knows, hold minutes still to come of agents no longer available: the
// tickets at risk until a replan saves them.
func (r *Responder) strandedCount() float64 {
	r.mu.Lock()
	tcs := make([]*tenantCalendar, 0, len(r.tenants))
	for _, tc := range r.tenants {
		tcs = append(tcs, tc)
	}
	r.mu.Unlock()
	now := r.now()
	n := 0
	for _, tc := range tcs {
		tc.mu.Lock()
		n += len(tc.cal.Stranded(now))
		tc.mu.Unlock()
	}
	return float64(n)
}

// utilisation is the share of the bookable agent-minutes of the next 8 h
// (a BRONZE window from now) that are reserved (confirmed, held or being
// claimed), over the tenants this responder has loaded; 0 when nothing is
// bookable. Each calendar is locked only for its own count (a few
// hundred minutes and a look at each agent), one after the other, so a
// scrape never holds a request up for long; the figure is therefore an
// approximation, each tenant counted at a slightly different moment.
func (r *Responder) utilisation() float64 {
	r.mu.Lock()
	tcs := make([]*tenantCalendar, 0, len(r.tenants))
	for _, tc := range r.tenants {
		tcs = append(tcs, tc)
	}
	r.mu.Unlock()
	now := r.now()
	// The agent-minutes a ticket created now could take, the longest
	// window: a BRONZE one.
	first, last, _ := calendar.Window(now, subjects.Bronze)
	var offered, free int
	for _, tc := range tcs {
		tc.mu.Lock()
		o, f := tc.cal.Offered(first, last), tc.cal.Free(now, first, last)
		tc.mu.Unlock()
		offered += o
		free += min(f, o)
	}
	if offered == 0 {
		return 0
	}
	return float64(offered-free) / float64(offered)
}

// responderMetrics are the responder's Prometheus counters.
type responderMetrics struct {
	requests   *prometheus.CounterVec
	conflicts  prometheus.Counter
	rebuilds   *prometheus.CounterVec
	agentsWait *prometheus.HistogramVec
	moves      *prometheus.HistogramVec
	atRisk     prometheus.GaugeFunc
	utilised   prometheus.GaugeFunc
}

// Outcomes of a wait for the agents watch (label of tms_eta_agents_wait_seconds).
const (
	waitApplied  = "applied"
	waitTimedOut = "timed_out"
)

func newResponderMetrics(reg prometheus.Registerer, shards int, stranded, utilisation func() float64) (*responderMetrics, error) {
	m := &responderMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_eta_requests_total", Help: "ETA requests answered, by operation and reply code.",
		}, []string{"op", "code"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_eta_kv_create_conflicts_total",
			Help: "Slot writes (creates and revision-checked updates) lost to another writer (the next candidate is tried).",
		}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_eta_watch_restarts_total", Help: "KV watches restarted and rebuilt, by bucket.",
		}, []string{"bucket"}),
		agentsWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tms_eta_agents_wait_seconds",
			Help: "Waits of reserve and hold requests for the agents watch to apply the tenant's last agent write " +
				"(read-your-writes), by outcome: applied, or timed_out (answered 503; 400 for a revision no write has).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"outcome"}),
		moves: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tms_eta_moves",
			Help: "Accepted tickets moved to other agent-minutes per placement, by reason: admission (every " +
				"accepted reserve or hold, 0 for most) or replan (per ticket rescued from an absent agent).",
			Buckets: []float64{0, 1, 2, 3, 5, 8, 13, 21},
		}, []string{"reason"}),
		atRisk: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tms_tickets_at_risk",
			Help: "Tickets on agents no longer available, still to be served, that no replan has saved (yet).",
		}, stranded),
		utilised: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tms_eta_utilisation_ratio",
			Help: "Reserved (confirmed, held or being claimed) over bookable agent-minutes of the next 8 h, over the " +
				"tenants this responder has loaded; an approximation computed at each scrape, tenant by tenant.",
		}, utilisation),
	}
	if err := ops.RegisterAll(reg, ops.Collector(&m.requests), ops.Collector(&m.conflicts),
		ops.Collector(&m.rebuilds), ops.Collector(&m.agentsWait), ops.Collector(&m.moves),
		ops.Collector(&m.atRisk), ops.Collector(&m.utilised)); err != nil {
		return nil, err
	}
	// The children that exist from the start, at zero.
	for _, o := range []string{waitApplied, waitTimedOut} {
		m.agentsWait.WithLabelValues(o)
	}
	for _, r := range []string{moveAdmission, moveReplan} {
		m.moves.WithLabelValues(r)
	}
	// The buckets a responder watches: the slot shards and the agents.
	for i := range shards {
		m.rebuilds.WithLabelValues(subjects.SlotBucket(i))
	}
	m.rebuilds.WithLabelValues(subjects.BucketAgents)
	return m, nil
}

func (m *responderMetrics) request(op string, code int) {
	if m != nil {
		m.requests.WithLabelValues(op, fmt.Sprint(code)).Inc()
	}
}

func (m *responderMetrics) moved(reason string, n int) {
	if m != nil {
		m.moves.WithLabelValues(reason).Observe(float64(n))
	}
}

func (m *responderMetrics) conflict() {
	if m != nil {
		m.conflicts.Inc()
	}
}

func (m *responderMetrics) rebuild(bucket string) {
	if m != nil {
		m.rebuilds.WithLabelValues(bucket).Inc()
	}
}

func (m *responderMetrics) waited(outcome string, d time.Duration) {
	if m != nil {
		m.agentsWait.WithLabelValues(outcome).Observe(d.Seconds())
	}
}
