package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
)

// AllocatorConfig configures an Allocator.
type AllocatorConfig struct {
	JS       jetstream.JetStream
	Registry *tenants.Registry
	Tickets  *tenants.Tickets
	Logger   *slog.Logger
	// Concurrency is how many tenants a process writes at once (one batch
	// each), subjects.MinAllocConcurrency..MaxAllocConcurrency; 0 -> 16.
	// A process holds at most Concurrency x BatchSize records pulled and
	// not yet settled. subjects.KeyAllocatorSettings, when set, overrides
	// it live (see allocator_scale.go); deleted, this value is back.
	Concurrency int
	// BatchSize is the most records of one tenant written together (0 ->
	// 100): consecutive tickets in one transaction.
	BatchSize int
	// BatchWait is how long a tenant's batch waits, after its first
	// record, for more before it is written (0 -> 2ms; negative: no
	// wait). A batch is written once it is full or its wait is over.
	BatchWait time.Duration
	Replicas  int
	// Shards is the number of slot buckets (0: subjects.DefaultSlotShards).
	// It must be the responders' count: the allocators consume every one.
	Shards int
	// SlotMaxAge is how long a slot bucket keeps a record (0:
	// subjects.SlotRecordAge). It must be the responders' value, or the
	// processes keep updating the buckets back and forth.
	SlotMaxAge time.Duration
	// Backoff is the redelivery delay after the given delivery failed
	// for a reason that will pass (a conflict whose release may be on its
	// way, the registry unreachable). nil: 1s, 2s, 5s, 10s, then 30s.
	Backoff func(delivery int) time.Duration
	// DownBackoff is how long a tenant whose database failed is left
	// alone after the given consecutive failure (its records parked
	// straight away meanwhile). nil: 1s doubling up to 30s.
	DownBackoff func(failures int) time.Duration
	// AckWait is how long the server waits for an ack before it hands a
	// message to another worker (a worker that died). 0 -> 30s. It is a
	// property of the shared durable consumers: the last process to start
	// sets it for all.
	AckWait time.Duration
	Metrics prometheus.Registerer // may be nil
	// BeforeCommit and AfterCommit, when set, are called with the ticket
	// id of each ticket record a worker writes: before the write (of its
	// batch) to the tenant database, and after the write committed but
	// before the ack. Fault-injection points for tests (a crash at either
	// must leave the ticket written exactly once). nil: nothing.
	BeforeCommit func(ticket string)
	AfterCommit  func(ticket string)
	// Version and Command are what the process answers
	// subjects.SubjectWorkersInfo with (tms's version, serve or worker).
	Version, Command string
	// StatsInterval is how often the backlog and dead-letter gauges are
	// read from the consumers and streams (0: 5s).
	StatsInterval time.Duration
	// Now is the clock of the settled rate (nil: time.Now); tests set it.
	Now func() time.Time
}

// Allocator writes the tickets of the slot buckets into each tenant's
// database (docs/design.md, flow step 4). The record that reserves a
// minute for a ticket (subjects.SlotConfirmed) is the ticket's durable
// hand-off, and the record that releases it (subjects.SlotReleased with
// the ticket) its cancel: the allocators read them from the buckets'
// streams, one durable pull consumer per shard (subjects.AllocatorConsumer)
// shared by any number of processes. The streams keep their records
// (limits retention): an ack only moves the consumer on, it deletes
// nothing. Each message is acked only after its transaction committed, so
// a worker that dies leaves it to another.
//
// The records pulled go to one queue per tenant; one goroutine at a time
// drains a tenant's queue (its records are written in stream order within
// the process), Concurrency tenants at once (or the live setting's count,
// subjects.KeyAllocatorSettings, which may change while Run runs), up to
// BatchSize records per batch: consecutive tickets in one transaction
// (tenants.Tickets.ApplyCreatedBatch), cancels and moves one by one in
// their place.
//
// A ticket that feasibility admission or a re-plan moved has a confirmed
// record with Moves > 0 at its new key, written before the record that
// takes its old minute (one atomic batch): its row moves there
// (tenants.Tickets.ApplyMoved), unless the row already has as many moves
// (a record delivered late never moves a row back), and once committed a
// subjects.MoveEvent is published on subjects.EventSubject(tenant,
// subjects.EventMoved) (core NATS: a failure is logged and counted, the
// record is acked all the same).
//
// What happens to a record:
//   - a ticket's, written (or already there): acked;
//   - a hold, a minute freed without a ticket, or vacated by a moved
//     ticket: acked, nothing to write;
//   - its tenant's database unreachable: parked (subjects.StreamParked)
//     and acked, the tenant left alone for DownBackoff (its records
//     parked straight away meanwhile); the parked records are written by
//     the consumer subjects.ConsumerParked once the database is back,
//     however long that takes (the parked stream has no age limit), so one
//     stalled tenant neither holds up the others nor loses a ticket;
//   - the registry or NATS unreachable: redelivered after Backoff, for as
//     long as it takes, never dropped;
//   - refused by the tenant database as a double booking: the ticket
//     holding the minute was released or moved away earlier on the same
//     key; its released record, found by walking the key's history back
//     through Prev, or its newest record after the move (followed from
//     the Moved of a record on the way), is applied first and the write
//     retried; without one it is retried a few times and then
//     dead-lettered;
//   - invalid (subject, key, JSON, fields), for an unknown tenant, or failing
//     for an unexpected reason too often: published with the reason to the
//     dead-letter stream, logged as an error, and terminated.
type Allocator struct {
	js        jetstream.JetStream
	shards    []*allocShard
	parked    *allocShard
	reg       *tenants.Registry
	tickets   *tenants.Tickets
	log       *slog.Logger
	conc      int
	batch     int
	batchWait time.Duration
	backoff   func(int) time.Duration
	downOff   func(int) time.Duration
	ackWait   time.Duration
	m         *allocatorMetrics
	opsKV     jetstream.KeyValue
	// flagConc is Concurrency as configured, what a deleted setting
	// goes back to.
	flagConc int
	info     workerIdentity
	stats    time.Duration
	settled  *rateCounter
	writing  atomic.Int64

	scaleMu sync.Mutex
	scale   concurrencyState
	running *runState // nil while Run is not running

	beforeCommit, afterCommit func(ticket string)

	mu        sync.Mutex
	conflicts map[conflictKey]allocConflictCount
	// down holds the tenants whose database failed, until a write to it
	// succeeds.
	down map[string]tenantDown
}

// allocShard is one consumer the allocators read: a slot shard (its
// bucket, read back when a double booking is resolved) or the parked
// stream (index -1, no bucket).
type allocShard struct {
	index  int
	stream string
	kv     jetstream.KeyValue
	cfg    jetstream.ConsumerConfig
}

// isParked reports whether sh is the parked stream's consumer.
func (sh *allocShard) isParked() bool { return sh.index < 0 }

// conflictKey names one message: a stream sequence of one shard.
type conflictKey struct {
	shard int
	seq   uint64
}

type allocConflictCount struct {
	n    int
	last time.Time
}

// Tuning of the allocators.
const (
	allocConcurrency = 16
	allocBatchSize   = DefaultAllocBatch
	allocBatchWait   = DefaultAllocBatchWait
	// allocMinPull is the least a puller buffers, whatever the batch size.
	allocMinPull = 64
	// allocStatsInterval is how often a worker reads its consumers' and
	// the dead-letter stream's state for the backlog gauges.
	allocStatsInterval = 5 * time.Second
	allocAckWait       = 30 * time.Second
	// allocMaxAckPending bounds the messages of one shard handed out and
	// not yet acked, over all processes. A stalled tenant's records are
	// parked, not held here.
	allocMaxAckPending = 10_000
	// parkedMaxAckPending bounds the parked records handed out: those of
	// tenants still down wait in it for their next try.
	parkedMaxAckPending = 100_000
	// allocMaxConflictTries is how many times a double booking is retried
	// (by this process) before it is dead-lettered.
	allocMaxConflictTries = 8
	// allocMaxErrorDeliveries bounds the deliveries of a message that keeps
	// failing for an unexpected reason (not an outage).
	allocMaxErrorDeliveries = 10
	// allocDBTimeout bounds one write to a tenant database.
	allocDBTimeout = 20 * time.Second
	// allocConflictRounds is how often one delivery applies a holder's
	// cancel and retries before giving the message back.
	allocConflictRounds = 3
)

// Defaults of AllocatorConfig.Concurrency, BatchSize and BatchWait (tms's
// --alloc-concurrency, --alloc-batch and --alloc-batch-wait).
const (
	DefaultAllocConcurrency = allocConcurrency
	DefaultAllocBatch       = 500
	DefaultAllocBatchWait   = 100 * time.Millisecond
)

// DefaultBackoff is the redelivery delay used when none is configured.
func DefaultBackoff(delivery int) time.Duration {
	steps := []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second}
	if delivery >= 1 && delivery <= len(steps) {
		return steps[delivery-1]
	}
	if delivery < 1 {
		return steps[0]
	}
	return 30 * time.Second
}

// DefaultDownBackoff is how long a tenant is left alone after its
// database failed failures times in a row: 1s, doubling, at most 30s.
func DefaultDownBackoff(failures int) time.Duration {
	d := time.Second
	for i := 1; i < failures && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// NewAllocator opens (creating them when missing) the slot buckets, the
// dead-letter and parked streams, one durable consumer per shard and the
// parked stream's.
func NewAllocator(ctx context.Context, cfg AllocatorConfig) (*Allocator, error) {
	switch {
	case cfg.JS == nil:
		return nil, fmt.Errorf("%w: nil JetStream", ErrAllocatorConfig)
	case cfg.Registry == nil:
		return nil, fmt.Errorf("%w: nil Registry", ErrAllocatorConfig)
	case cfg.Tickets == nil:
		return nil, fmt.Errorf("%w: nil Tickets", ErrAllocatorConfig)
	case cfg.Shards < 0:
		return nil, fmt.Errorf("%w: %d shards", ErrAllocatorConfig, cfg.Shards)
	case cfg.SlotMaxAge < 0:
		return nil, fmt.Errorf("%w: slot max age %s", ErrAllocatorConfig, cfg.SlotMaxAge)
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("%w: batch size %d", ErrAllocatorConfig, cfg.BatchSize)
	}
	a := &Allocator{js: cfg.JS, reg: cfg.Registry, tickets: cfg.Tickets, conc: cfg.Concurrency,
		batch: cfg.BatchSize, batchWait: cfg.BatchWait, backoff: cfg.Backoff, downOff: cfg.DownBackoff,
		ackWait: cfg.AckWait, conflicts: map[conflictKey]allocConflictCount{}, down: map[string]tenantDown{},
		beforeCommit: cfg.BeforeCommit, afterCommit: cfg.AfterCommit}
	a.log = cfg.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With(slog.String("component", "allocator"))
	if a.conc <= 0 {
		a.conc = allocConcurrency
	}
	if a.conc < subjects.MinAllocConcurrency || a.conc > subjects.MaxAllocConcurrency {
		return nil, fmt.Errorf("%w: concurrency %d, want %d..%d", ErrAllocatorConfig, a.conc,
			subjects.MinAllocConcurrency, subjects.MaxAllocConcurrency)
	}
	a.flagConc = a.conc
	a.scale = concurrencyState{n: a.conc, source: subjects.ConcurrencyFromFlag}
	a.info = newWorkerIdentity(cfg.Version, cfg.Command)
	a.stats = cfg.StatsInterval
	if a.stats <= 0 {
		a.stats = allocStatsInterval
	}
	a.settled = newRateCounter(cfg.Now)
	if a.batch == 0 {
		a.batch = allocBatchSize
	}
	switch {
	case a.batchWait == 0:
		a.batchWait = allocBatchWait
	case a.batchWait < 0:
		a.batchWait = 0
	}
	if a.backoff == nil {
		a.backoff = DefaultBackoff
	}
	if a.downOff == nil {
		a.downOff = DefaultDownBackoff
	}
	if a.ackWait <= 0 {
		a.ackWait = allocAckWait
	}
	shards := cfg.Shards
	if shards == 0 {
		shards = subjects.DefaultSlotShards
	}
	if err := registerEventMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	if cfg.Metrics != nil {
		m, err := newAllocatorMetrics(cfg.Metrics, shards, a.writingNow)
		if err != nil {
			return nil, err
		}
		a.m = m
		a.m.concurrency(a.conc)
	}
	if err := EnsureStreams(ctx, cfg.JS, cfg.Replicas); err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, ensureTimeout)
	opsKV, err := jskit.OpenBucket(octx, cfg.JS, subjects.OpsBucketConfig(cfg.Replicas))
	cancel()
	a.opsKV = opsKV
	if err != nil {
		return nil, fmt.Errorf("opening the operations bucket %s: %w", subjects.BucketOps, err)
	}
	for i := range shards {
		kctx, cancel := context.WithTimeout(ctx, ensureTimeout)
		kv, err := jskit.OpenBucket(kctx, cfg.JS, subjects.SlotBucketConfig(i, cfg.Replicas, cfg.SlotMaxAge))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("opening slot bucket %s: %w", subjects.SlotBucket(i), err)
		}
		sh := &allocShard{index: i, stream: subjects.SlotStream(i), kv: kv, cfg: jetstream.ConsumerConfig{
			Durable:       subjects.AllocatorConsumer(i),
			Description:   "tms allocator workers: the tickets of slot shard " + strconv.Itoa(i) + " into tenant databases",
			FilterSubject: subjects.SlotStreamSubjects(i),
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       a.ackWait,
			// Unbounded: a Postgres outage must never drop a ticket.
			// Records that can never be written go to the dead-letter
			// stream instead.
			MaxDeliver:    -1,
			MaxAckPending: allocMaxAckPending,
			Replicas:      cfg.Replicas,
		}}
		if _, err := a.consumer(ctx, sh); err != nil {
			return nil, err
		}
		a.shards = append(a.shards, sh)
	}
	a.parked = &allocShard{index: -1, stream: subjects.StreamParked, cfg: jetstream.ConsumerConfig{
		Durable:       subjects.ConsumerParked,
		Description:   "tms allocator workers: parked slot records, written once their tenant's database is back",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: parkedMaxAckPending,
		Replicas:      cfg.Replicas,
	}}
	if _, err := a.consumer(ctx, a.parked); err != nil {
		return nil, err
	}
	return a, nil
}

// shard is the slot shard of index i, nil when there is none.
func (a *Allocator) shard(i int) *allocShard {
	if i < 0 || i >= len(a.shards) {
		return nil
	}
	return a.shards[i]
}

// consumer opens the allocators' durable consumer of shard sh, creating or
// updating it only when it is missing or differs from sh.cfg: every
// worker calls this at start, and on a cluster concurrent updates of one
// consumer are proposals that may go unanswered.
func (a *Allocator) consumer(ctx context.Context, sh *allocShard) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	c, err := a.js.Consumer(cctx, sh.stream, sh.cfg.Durable)
	if err == nil && jskit.ConfigCovers(c.CachedInfo().Config, sh.cfg) {
		return c, nil
	}
	c, err = a.js.CreateOrUpdateConsumer(cctx, sh.stream, sh.cfg)
	if err != nil {
		return nil, fmt.Errorf("ensuring consumer %s on %s: %w", sh.cfg.Durable, sh.stream, err)
	}
	return c, nil
}

// Run consumes every shard and the parked stream until ctx is done, with
// at most concurrency x BatchSize records pulled and not yet settled (the
// concurrency in force, which follows subjects.KeyAllocatorSettings while
// Run runs), then stops pulling, gives back the messages it had
// buffered, writes and settles the records it had queued and returns nil.
// Meanwhile it answers subjects.SubjectWorkersInfo and keeps the backlog
// gauges. One Run at a time.
func (a *Allocator) Run(ctx context.Context) error {
	limit := newFlightLimit(0)
	// Each ready queue has a record in flight: room for the most records
	// in flight at any concurrency, plus the drainers.
	qs := newTenantQueues(subjects.MaxAllocConcurrency*a.batch + subjects.MaxAllocConcurrency)
	// Batches finish what they started when Run is stopped: a write
	// that commits is acked rather than redelivered.
	ds := newDrainers(context.WithoutCancel(ctx), a, qs)
	rs := &runState{limit: limit, drainers: ds}
	a.startRun(rs)
	var side sync.WaitGroup
	side.Go(func() { a.watchSettings(ctx) })
	side.Go(func() { a.pollStats(ctx) })
	stopInfo := a.serveInfo()
	n, source, _ := a.Concurrency()
	a.log.Info("allocator ready", slog.Int("consumers", len(a.shards)+1), slog.Int("concurrency", n),
		slog.String("concurrency_source", source), slog.Int("batch", a.batch))
	var pullers sync.WaitGroup
	for _, sh := range append(append([]*allocShard(nil), a.shards...), a.parked) {
		pullers.Go(func() { a.consume(ctx, sh, limit, qs) })
	}
	// Every enqueue happens in a puller, before pullers.Wait returns.
	pullers.Wait()
	side.Wait()
	stopInfo()
	// No concurrency change from here: the drainers left finish the
	// queues.
	a.endRun()
	qs.close()
	ds.wait()
	return nil
}

// consume pulls sh's messages until ctx is done, queueing each for its
// tenant once inflight has room.
func (a *Allocator) consume(ctx context.Context, sh *allocShard, inflight *flightLimit, qs *tenantQueues) {
	log := a.log.With(slog.String("stream", sh.stream))
	retry := 0
	for ctx.Err() == nil {
		if retry > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(a.backoff(retry)):
			}
		}
		cons, err := a.consumer(ctx, sh)
		if err != nil {
			retry++
			log.Warn("allocator cannot reach its consumer; retrying", slog.Any("err", err))
			continue
		}
		// A buffer of a batch at least: a tenant's batch fills from it.
		it, err := cons.Messages(jetstream.PullMaxMessages(max(a.batch, allocMinPull)))
		if err != nil {
			retry++
			log.Warn("allocator cannot start consuming; retrying", slog.Any("err", err))
			continue
		}
		retry = 0
		stop := context.AfterFunc(ctx, it.Drain)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			if err != nil {
				log.Warn("allocator pull", slog.Any("err", err))
				continue
			}
			if ctx.Err() != nil {
				a.giveBack(msg) // buffered after the stop: another worker takes it now
				continue
			}
			if !inflight.acquire(ctx) {
				a.giveBack(msg)
				continue
			}
			item := a.received(sh, msg, inflight.release)
			if item == nil {
				inflight.release()
				continue
			}
			qs.enqueue(item)
		}
		stop()
		it.Stop()
		if ctx.Err() == nil {
			// Closed under us (connection closed, consumer deleted).
			retry = 1
		}
	}
}

func (a *Allocator) giveBack(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		a.log.Debug("giving back a buffered message", slog.String("subject", msg.Subject()), slog.Any("err", err))
	}
}

// keepAlive tells the server, every third of the ack wait, that the
// message is still being worked on, until the returned stop is called.
func (a *Allocator) keepAlive(msg jetstream.Msg) (stop func()) {
	every := a.ackWait / 3
	var mu sync.Mutex
	stopped := false
	var timer *time.Timer
	// The callback may run before AfterFunc has returned (a process that
	// was paused, a loaded machine): it must not read timer until the
	// assignment is done, so the assignment happens under mu too.
	mu.Lock()
	timer = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		timer.Reset(every)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}
