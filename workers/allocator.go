package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
)

// AllocatorConfig configures an Allocator.
type AllocatorConfig struct {
	JS          jetstream.JetStream
	Registry    *tenants.Registry
	Tickets     *tenants.Tickets
	Logger      *slog.Logger
	Concurrency int // messages in flight per process, over all shards; 0 -> 16
	Replicas    int
	// Shards is the number of slot buckets (0: subjects.DefaultSlotShards).
	// It must be the responders' count: the allocators consume every one.
	Shards int
	// SlotMaxAge is how long a slot bucket keeps a record (0:
	// subjects.SlotRecordAge). It must be the responders' value, or the
	// processes keep updating the buckets back and forth.
	SlotMaxAge time.Duration
	// Backoff is the redelivery delay after the given delivery failed
	// for a reason that will pass (Postgres down, a conflict whose release
	// may be on its way). nil: 1s, 2s, 5s, 10s, then 30s.
	Backoff func(delivery int) time.Duration
	// AckWait is how long the server waits for an ack before it hands a
	// message to another worker (a worker that died). 0 -> 30s. It is a
	// property of the shared durable consumers: the last process to start
	// sets it for all.
	AckWait time.Duration
	Metrics prometheus.Registerer // may be nil
	// BeforeCommit and AfterCommit, when set, are called with the ticket
	// id of each ticket record a worker writes: before its write to the
	// tenant database, and after the write committed but before the ack.
	// Fault-injection points for tests (a crash at either must leave the
	// ticket written exactly once). nil: nothing.
	BeforeCommit func(ticket string)
	AfterCommit  func(ticket string)
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
// What happens to a record:
//   - a ticket's, written (or already there): acked, with the server's
//     confirmation;
//   - a hold, or a minute freed without a ticket: acked, nothing to write;
//   - Postgres or NATS unreachable: redelivered after Backoff, for as long as
//     it takes, never dropped;
//   - refused by the tenant database as a double booking: the ticket
//     holding the minute was released earlier on the same key; its
//     released record, found by walking the key's history back through
//     Prev, is applied first and the write retried; without one it is
//     retried a few times and then dead-lettered;
//   - invalid (subject, key, JSON, fields), for an unknown tenant, or failing
//     for an unexpected reason too often: published with the reason to the
//     dead-letter stream, logged as an error, and terminated.
type Allocator struct {
	js      jetstream.JetStream
	shards  []*allocShard
	reg     *tenants.Registry
	tickets *tenants.Tickets
	log     *slog.Logger
	conc    int
	backoff func(int) time.Duration
	ackWait time.Duration
	m       *allocatorMetrics

	beforeCommit, afterCommit func(ticket string)

	mu        sync.Mutex
	conflicts map[conflictKey]allocConflictCount
}

// allocShard is one slot shard: its bucket (read back when a double
// booking is resolved) and its consumer's configuration.
type allocShard struct {
	index  int
	stream string
	kv     jetstream.KeyValue
	cfg    jetstream.ConsumerConfig
}

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
	allocAckWait     = 30 * time.Second
	// allocMaxAckPending bounds the messages of one shard handed out and
	// not yet acked, over all processes. Messages waiting for a
	// NakWithDelay count too: a tenant whose database is down holds up to
	// this many.
	allocMaxAckPending = 10_000
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

// NewAllocator opens (creating them when missing) the slot buckets, the
// dead-letter stream and one durable consumer per shard.
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
	}
	a := &Allocator{js: cfg.JS, reg: cfg.Registry, tickets: cfg.Tickets, conc: cfg.Concurrency,
		backoff: cfg.Backoff, ackWait: cfg.AckWait, conflicts: map[conflictKey]allocConflictCount{},
		beforeCommit: cfg.BeforeCommit, afterCommit: cfg.AfterCommit}
	a.log = cfg.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With(slog.String("component", "allocator"))
	if a.conc <= 0 {
		a.conc = allocConcurrency
	}
	if a.backoff == nil {
		a.backoff = DefaultBackoff
	}
	if a.ackWait <= 0 {
		a.ackWait = allocAckWait
	}
	shards := cfg.Shards
	if shards == 0 {
		shards = subjects.DefaultSlotShards
	}
	if cfg.Metrics != nil {
		m, err := newAllocatorMetrics(cfg.Metrics)
		if err != nil {
			return nil, err
		}
		a.m = m
	}
	if err := EnsureStreams(ctx, cfg.JS, cfg.Replicas); err != nil {
		return nil, err
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
	return a, nil
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

// Run consumes every shard until ctx is done, with at most Concurrency
// messages in flight over all of them, then stops pulling, gives back the
// messages it had buffered, waits for the messages being handled and
// returns nil.
func (a *Allocator) Run(ctx context.Context) error {
	sem := make(chan struct{}, a.conc)
	var handlers sync.WaitGroup
	// Handlers finish what they started when Run is stopped: a write
	// that commits is acked rather than redelivered.
	hctx := context.WithoutCancel(ctx)
	var pullers sync.WaitGroup
	for _, sh := range a.shards {
		pullers.Go(func() { a.consume(ctx, hctx, sh, sem, &handlers) })
	}
	// Every handlers.Add happens in a puller, before pullers.Wait returns.
	pullers.Wait()
	handlers.Wait()
	return nil
}

// consume pulls shard sh's messages until ctx is done, handing each to a
// handler once sem has room.
func (a *Allocator) consume(ctx, hctx context.Context, sh *allocShard, sem chan struct{}, handlers *sync.WaitGroup) {
	log := a.log.With(slog.Int("shard", sh.index))
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
		it, err := cons.Messages(jetstream.PullMaxMessages(a.conc))
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
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				a.giveBack(msg)
				continue
			}
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				defer func() { <-sem }()
				a.handle(hctx, sh, msg)
			}()
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

// handle decides one message's fate (see Allocator and decide.go) and
// settles it.
func (a *Allocator) handle(ctx context.Context, sh *allocShard, msg jetstream.Msg) {
	start := time.Now()
	stopKeepAlive := a.keepAlive(msg)
	defer stopKeepAlive()
	md, err := msg.Metadata()
	if err != nil {
		a.log.Warn("slot record without metadata", slog.String("subject", msg.Subject()), slog.Any("err", err))
		_ = msg.NakWithDelay(a.backoff(1))
		return
	}
	d := delivery{shard: sh.index, subject: msg.Subject(), header: msg.Headers(), data: msg.Data(),
		seq: md.Sequence.Stream, delivered: md.NumDelivered}
	log := a.log.With(slog.String("subject", d.subject), slog.Uint64("seq", d.seq), slog.Uint64("delivery", d.delivered))

	dec := decide(d)
	record := dec.record
	if dec.action == actDeadLetter {
		record = recordInvalid
	}
	defer func() { a.m.observe(record, time.Since(start)) }()
	if dec.tenant != "" {
		log = log.With(slog.String("tenant", dec.tenant))
	}
	if dec.ticket != "" {
		log = log.With(slog.String("ticket", dec.ticket))
	}
	if dec.writes() {
		dec = a.write(ctx, log, sh, d, dec)
	}
	a.settle(ctx, log, msg, d, dec)
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
