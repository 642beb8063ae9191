package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
)

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	JS       jetstream.JetStream
	Registry *tenants.Registry
	Tickets  *tenants.Tickets
	Logger   *slog.Logger
	// Now is the clock the age of a reservation is judged by (nil:
	// time.Now). The pass timer of Run is always real time.
	Now func() time.Time
	// Grace is how old a confirmed reservation must be before it can be
	// judged an orphan (0: DefaultReconcileGrace). It must stay well above
	// the longest an ingress may take between the reserve and the publish
	// of a ticket: at least subjects.Budget.MinReconcileGrace, which
	// cmd/tms checks (subjects.Budget.CheckReconcileGrace).
	Grace time.Duration
	// Interval is the time between two passes (0: 20s); each wait is
	// jittered down to no less than 3/4 of it, never more.
	Interval time.Duration
	// Shards is the slot shard count (0: subjects.DefaultSlotShards); it
	// must be the responders' count.
	Shards int
	// MaxChecks bounds the reservations one pass looks up in the stream or
	// a tenant database (0: 1000); the rest wait for the next pass.
	MaxChecks int
	Metrics   prometheus.Registerer // may be nil
}

// Defaults of the reconciler. DefaultReconcileGrace is three times
// subjects.DefaultBudget.MinReconcileGrace (a test holds it above).
const (
	DefaultReconcileGrace    = 30 * time.Second
	DefaultReconcileInterval = 20 * time.Second
	defaultReconcileChecks   = 1000
	// reconcileLookupTimeout bounds one look-up (stream, database) or one
	// purge; reconcileScanTimeout one snapshot of a shard bucket.
	reconcileLookupTimeout = 5 * time.Second
	reconcileScanTimeout   = 30 * time.Second
)

// Reconciler releases orphan reservations: confirmed slot records whose
// ticket never reached the TICKETS stream because the ingress that
// reserved it died before it published (or its publish was lost). The
// responders never release such a record themselves, and it would
// otherwise hold its agent-minute until the minute had passed.
//
// A confirmed record older than Grace is legitimate while its ticket's
// latest event (the last message on its stream subject, or once a worker
// has consumed it, the ticket's row in the tenant database) is a create
// naming the same agent and minute. A ticket id may hold two records
// (an Idempotency-Key retry took over a dead twin's ticket id and got a
// new slot): only the record the event names is kept. Anything else is
// released with a purge checked against the revision that was judged, so
// a record rewritten meanwhile is left alone and any number of
// reconcilers may run at once. A record whose ticket was cancelled is
// released too: the cancel's own release did not happen.
//
// Whenever a look-up fails (NATS, the registry or Postgres unreachable, an
// event that does not decode) the record is left for a later pass: the
// reconciler never releases what it does not know to be an orphan.
//
// A record judged legitimate is remembered by key and revision and not
// looked up again while it stays at that revision, so the steady cost of
// a pass is one snapshot of each shard bucket (one ordered consumer, the
// values streamed) plus look-ups for the records that are new and old
// enough.
//
// Bound: with NATS and the tenant's database reachable, an orphan written
// at w is released by the first pass that starts after w + Grace, so
// within Grace + Interval + the duration of one pass (provided no more
// than MaxChecks records are waiting to be judged).
type Reconciler struct {
	js        jetstream.JetStream
	reg       *tenants.Registry
	tickets   *tenants.Tickets
	log       *slog.Logger
	now       func() time.Time
	grace     time.Duration
	interval  time.Duration
	nShards   int
	maxChecks int
	m         *reconcilerMetrics

	pass     sync.Mutex // one pass at a time per Reconciler
	shards   []jetstream.KeyValue
	stream   jetstream.Stream
	verified map[string]uint64 // slot key -> revision judged legitimate
}

// NewReconciler checks the config. Buckets and the stream are opened on
// first use, so it may start before any responder has created them.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	switch {
	case cfg.JS == nil:
		return nil, fmt.Errorf("%w: nil JetStream", ErrReconcilerConfig)
	case cfg.Registry == nil:
		return nil, fmt.Errorf("%w: nil Registry", ErrReconcilerConfig)
	case cfg.Tickets == nil:
		return nil, fmt.Errorf("%w: nil Tickets", ErrReconcilerConfig)
	case cfg.Grace < 0 || cfg.Interval < 0 || cfg.Shards < 0 || cfg.MaxChecks < 0:
		return nil, fmt.Errorf("%w: negative grace, interval, shards or max checks", ErrReconcilerConfig)
	}
	r := &Reconciler{js: cfg.JS, reg: cfg.Registry, tickets: cfg.Tickets, now: cfg.Now, grace: cfg.Grace,
		interval: cfg.Interval, nShards: cfg.Shards, maxChecks: cfg.MaxChecks, verified: map[string]uint64{}}
	if r.now == nil {
		r.now = time.Now
	}
	if r.grace == 0 {
		r.grace = DefaultReconcileGrace
	}
	if r.interval == 0 {
		r.interval = DefaultReconcileInterval
	}
	if r.nShards == 0 {
		r.nShards = subjects.DefaultSlotShards
	}
	if r.maxChecks == 0 {
		r.maxChecks = defaultReconcileChecks
	}
	r.shards = make([]jetstream.KeyValue, r.nShards)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r.log = log.With(slog.String("component", "reconciler"))
	if cfg.Metrics != nil {
		var err error
		if r.m, err = newReconcilerMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Run makes a pass every Interval (jittered, the first one after a random
// part of it, so processes started together do not scan together) until
// ctx is done, then returns nil. A failed pass is logged and retried at
// the next tick.
func (r *Reconciler) Run(ctx context.Context) error {
	r.log.Info("reconciler running", slog.Duration("grace", r.grace), slog.Duration("interval", r.interval))
	timer := time.NewTimer(rand.N(r.interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.log.Info("reconciler stopped")
			return nil
		case <-timer.C:
		}
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass incomplete", slog.Any("err", err))
		}
		timer.Reset(r.interval - rand.N(r.interval/4+1))
	}
}

// ReconcileStats says what one pass did.
type ReconcileStats struct {
	Scanned   int // slot records read
	Judged    int // confirmed records old enough, looked up
	Kept      int // judged legitimate
	Released  int // orphans (or cancelled tickets' slots) purged
	Undecided int // look-ups that failed: left for a later pass
	Deferred  int // old enough but over MaxChecks: left for the next pass
}

// candidate is a confirmed record old enough to be judged.
type candidate struct {
	shard  int
	key    string
	rev    uint64
	tenant string
	agent  string
	minute time.Time
	rec    subjects.SlotRecord
}

// Pass scans every slot shard once and releases the orphans it finds. An
// error means part of the scan did not happen (a bucket could not be
// read); what could be judged was.
func (r *Reconciler) Pass(ctx context.Context) (ReconcileStats, error) {
	r.pass.Lock()
	defer r.pass.Unlock()
	var st ReconcileStats
	now := r.now()
	var cands []candidate
	var errs []error
	seen := make(map[string]bool, len(r.verified))
	for shard := range r.nShards {
		entries, err := r.snapshot(ctx, shard)
		if err != nil {
			errs = append(errs, err)
			// Keep what was verified in this shard: its keys were not seen.
			for k := range r.verified {
				seen[k] = true
			}
			continue
		}
		for _, e := range entries {
			st.Scanned++
			seen[e.Key()] = true
			if c, ok := r.oldConfirmed(shard, e, now); ok {
				cands = append(cands, c)
			}
		}
	}
	for k := range r.verified {
		if !seen[k] {
			delete(r.verified, k) // gone: released, expired or past
		}
	}
	// A random order spreads the checks of an over-full pass fairly.
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for i, c := range cands {
		if ctx.Err() != nil {
			break
		}
		if i >= r.maxChecks {
			st.Deferred = len(cands) - i
			break
		}
		st.Judged++
		r.judge(ctx, c, &st)
	}
	r.m.pass(st)
	return st, errors.Join(errs...)
}

// snapshot reads the current records of one shard: a watch's initial
// values, then the watch is stopped (one ordered consumer, values
// streamed, no per-key round trip). A bucket no responder has created yet
// holds nothing.
func (r *Reconciler) snapshot(ctx context.Context, shard int) ([]jetstream.KeyValueEntry, error) {
	sctx, cancel := context.WithTimeout(ctx, reconcileScanTimeout)
	defer cancel()
	kv := r.shards[shard]
	if kv == nil {
		var err error
		kv, err = r.js.KeyValue(sctx, subjects.SlotBucket(shard))
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("opening slot bucket %s: %w", subjects.SlotBucket(shard), err)
		}
		r.shards[shard] = kv
	}
	w, err := kv.WatchAll(sctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watching slot bucket %s: %w", subjects.SlotBucket(shard), err)
	}
	defer jskit.StopWatcher(w)
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch of slot bucket %s closed during the snapshot", subjects.SlotBucket(shard))
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		case <-sctx.Done():
			return nil, fmt.Errorf("snapshot of slot bucket %s: %w", subjects.SlotBucket(shard), sctx.Err())
		}
	}
}

// oldConfirmed picks the records worth a look-up: confirmed, for a minute
// that has not begun yet (once it has, nothing can be admitted into it, so
// releasing it gains nothing), older than Grace, and not already judged
// legitimate at this revision. The age counts from the later of the
// ticket's created_at and the revision's write time: a hold confirmed by
// allocate_slot carries the hold's older instant.
func (r *Reconciler) oldConfirmed(shard int, e jetstream.KeyValueEntry, now time.Time) (candidate, bool) {
	if e.Operation() != jetstream.KeyValuePut || r.verified[e.Key()] == e.Revision() {
		return candidate{}, false
	}
	tenant, agent, minute, err := subjects.ParseSlotKey(e.Key())
	if err != nil || minute.Before(now) {
		return candidate{}, false
	}
	var rec subjects.SlotRecord
	if json.Unmarshal(e.Value(), &rec) != nil || rec.State != subjects.SlotConfirmed || subjects.ValidID(rec.Ticket) != nil {
		return candidate{}, false
	}
	written := rec.CreatedAt
	if e.Created().After(written) {
		written = e.Created()
	}
	if now.Sub(written) < r.grace {
		return candidate{}, false
	}
	return candidate{shard: shard, key: e.Key(), rev: e.Revision(), tenant: tenant, agent: agent, minute: minute,
		rec: rec}, true
}

// judge looks one candidate up and releases it if it is an orphan.
func (r *Reconciler) judge(ctx context.Context, c candidate, st *ReconcileStats) {
	log := r.log.With(slog.String("tenant", c.tenant), slog.String("ticket", c.rec.Ticket), slog.String("key", c.key))
	reason, err := r.verdict(ctx, c)
	switch {
	case err != nil:
		st.Undecided++
		log.Info("reservation left for a later pass", slog.Any("err", err))
		return
	case reason == "":
		st.Kept++
		r.verified[c.key] = c.rev
		return
	}
	pctx, cancel := context.WithTimeout(ctx, reconcileLookupTimeout)
	defer cancel()
	err = r.shards[c.shard].Purge(pctx, c.key, jetstream.LastRevision(c.rev))
	switch {
	case err == nil:
		st.Released++
		r.m.released(reason)
		log.Warn("released a reservation whose ticket does not hold it", slog.String("reason", reason),
			slog.String("agent", c.agent), slog.Time("slot_time", c.minute), slog.Time("created_at", c.rec.CreatedAt))
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || jskit.WrongLastSequence(err):
		// Rewritten since the snapshot (released, or taken again): not
		// the record that was judged.
		log.Debug("reservation changed before its release; left alone")
	default:
		st.Undecided++
		log.Warn("releasing an orphan reservation failed; retried next pass", slog.Any("err", err))
	}
}

// Release reasons (the metric's label).
const (
	reasonOrphan    = "orphan"    // the ticket is nowhere, or holds another slot
	reasonCancelled = "cancelled" // the ticket was cancelled
)

// verdict is "" for a legitimate record, or why it is to be released; an
// error when it cannot tell (ErrUndecided). A ticket in neither the stream
// nor its tenant's database counts as absent only once the stream leader
// confirms it (tenants.ConfirmAbsence).
func (r *Reconciler) verdict(ctx context.Context, c candidate) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, reconcileLookupTimeout)
	defer cancel()
	ten, err := r.reg.Get(lctx, c.tenant)
	if err != nil {
		return "", fmt.Errorf("%w: tenant %s: %w", ErrUndecided, c.tenant, err)
	}
	// The slot records are the tickets now (SPEC.md): this reconciler
	// goes away; it only compiles against the new lookup until then.
	lookup := tenants.TicketLookup{Rows: r.tickets, SlotTimeout: reconcileLookupTimeout, RowTimeout: reconcileLookupTimeout,
		Slots: func(context.Context, string) (jetstream.KeyValue, error) { return r.shards[c.shard], nil }}
	found, err := lookup.Find(ctx, ten, c.rec.Ticket, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUndecided, err)
	}
	ev, status, ok := found.Latest()
	if !ok {
		return reasonOrphan, nil
	}
	return c.judgeEvent(status == subjects.StatusCancelled, ev.Agent, ev.SlotTime), nil
}

// judgeEvent compares the ticket's latest known state with the record:
// "" when it is a live ticket in this very agent-minute.
func (c candidate) judgeEvent(cancelled bool, agent string, slot time.Time) string {
	switch {
	case agent != c.agent || !slot.Equal(c.minute):
		return reasonOrphan
	case cancelled:
		return reasonCancelled
	}
	return ""
}

// ticketStream returns the TICKETS stream once it exists.
func (r *Reconciler) ticketStream(ctx context.Context) (jetstream.Stream, error) {
	if r.stream != nil {
		return r.stream, nil
	}
	st, err := r.js.Stream(ctx, subjects.StreamTickets)
	if err != nil {
		// Without the stream nothing can be told apart; an ingress or a
		// worker creates it.
		return nil, fmt.Errorf("%w: opening stream %s: %w", ErrUndecided, subjects.StreamTickets, err)
	}
	r.stream = st
	return st, nil
}

// reconcilerMetrics are the reconciler's Prometheus counters.
type reconcilerMetrics struct {
	passes    prometheus.Counter
	releases  *prometheus.CounterVec
	undecided prometheus.Counter
	deferred  prometheus.Counter
}

func newReconcilerMetrics(reg prometheus.Registerer) (*reconcilerMetrics, error) {
	m := &reconcilerMetrics{
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_reconciler_passes_total", Help: "Reconciler passes over the slot buckets.",
		}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_reconciler_released_total",
			Help: "Confirmed reservations released because their ticket does not hold them, by reason (orphan, cancelled).",
		}, []string{"reason"}),
		undecided: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_reconciler_undecided_total",
			Help: "Reservations left alone because a look-up failed (retried next pass).",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_reconciler_deferred_total",
			Help: "Reservations due for a look-up left to the next pass (over the per-pass bound).",
		}),
	}
	if err := ops.RegisterAll(reg, ops.Collector(&m.passes), ops.Collector(&m.releases),
		ops.Collector(&m.undecided), ops.Collector(&m.deferred)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *reconcilerMetrics) pass(st ReconcileStats) {
	if m != nil {
		m.passes.Inc()
		m.undecided.Add(float64(st.Undecided))
		m.deferred.Add(float64(st.Deferred))
	}
}

func (m *reconcilerMetrics) released(reason string) {
	if m != nil {
		m.releases.WithLabelValues(reason).Inc()
	}
}
