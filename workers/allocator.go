package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Concurrency int // messages in flight per process, 0 -> 16
	Replicas    int
	// Backoff is the redelivery delay after the given delivery failed
	// for a reason that will pass (Postgres down, a conflict whose cancel
	// is on its way). nil: 1s, 2s, 5s, 10s, then 30s.
	Backoff func(delivery int) time.Duration
	// AckWait is how long the server waits for an ack before it hands a
	// message to another worker (a worker that died). 0 -> 30s. It is a
	// property of the shared durable consumer: the last process to start
	// sets it for all.
	AckWait time.Duration
	Metrics prometheus.Registerer // may be nil
	// BeforeCommit and AfterCommit, when set, are called with the ticket
	// id of each valid event a worker handles: before its write to the
	// tenant database, and after the write committed but before the ack.
	// Fault-injection points for tests (a crash at either must leave the
	// ticket written exactly once). nil: nothing.
	BeforeCommit func(ticket string)
	AfterCommit  func(ticket string)
}

// Allocator writes the ticket events of the TICKETS stream into each
// tenant's database (docs/design.md, flow step 4). Any number of processes share
// the durable pull consumer subjects.ConsumerAllocators; each message is
// acked only after its transaction committed, so a worker that dies leaves
// it to another.
//
// What happens to a message:
//   - written (or already there): acked, with the server's confirmation;
//   - Postgres or NATS unreachable: redelivered after Backoff, for as long as
//     it takes, never dropped;
//   - refused by the tenant database as a double booking: if the ticket
//     holding the minute has a cancel waiting in the stream, that cancel is
//     applied first and the write retried; otherwise it is retried a few
//     times (the cancel may still come) and then dead-lettered;
//   - invalid (subject, JSON, fields), for an unknown tenant, or failing
//     for an unexpected reason too often: published with the reason to the
//     dead-letter stream, logged as an error, and terminated.
type Allocator struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	reg     *tenants.Registry
	tickets *tenants.Tickets
	log     *slog.Logger
	conc    int
	backoff func(int) time.Duration
	ackWait time.Duration
	cfg     jetstream.ConsumerConfig
	m       *allocatorMetrics

	beforeCommit, afterCommit func(ticket string)

	mu        sync.Mutex
	conflicts map[uint64]allocConflictCount // by stream sequence
}

type allocConflictCount struct {
	n    int
	last time.Time
}

// Tuning of the allocators.
const (
	allocConcurrency = 16
	allocAckWait     = 30 * time.Second
	// allocMaxAckPending bounds the messages handed out and not yet acked,
	// over all processes. Messages waiting for a NakWithDelay count too:
	// a tenant whose database is down holds up to this many.
	allocMaxAckPending = 10_000
	// allocMaxConflictTries is how many times a double booking is retried
	// (by this process) before it is dead-lettered.
	allocMaxConflictTries = 8
	// allocMaxErrorDeliveries bounds the deliveries of a message that keeps
	// failing for an unexpected reason (not an outage).
	allocMaxErrorDeliveries = 10
	// allocMaxEventBytes is the largest ticket event accepted.
	allocMaxEventBytes = 8 << 10
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

// NewAllocator ensures the streams and the durable consumer.
func NewAllocator(ctx context.Context, cfg AllocatorConfig) (*Allocator, error) {
	switch {
	case cfg.JS == nil:
		return nil, fmt.Errorf("%w: nil JetStream", ErrAllocatorConfig)
	case cfg.Registry == nil:
		return nil, fmt.Errorf("%w: nil Registry", ErrAllocatorConfig)
	case cfg.Tickets == nil:
		return nil, fmt.Errorf("%w: nil Tickets", ErrAllocatorConfig)
	}
	a := &Allocator{js: cfg.JS, reg: cfg.Registry, tickets: cfg.Tickets, conc: cfg.Concurrency,
		backoff: cfg.Backoff, ackWait: cfg.AckWait, conflicts: map[uint64]allocConflictCount{},
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
	sctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	stream, err := cfg.JS.Stream(sctx, subjects.StreamTickets)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", subjects.StreamTickets, err)
	}
	a.stream = stream
	a.cfg = jetstream.ConsumerConfig{
		Durable:       subjects.ConsumerAllocators,
		Description:   "tms allocator workers: ticket events into tenant databases",
		FilterSubject: subjects.TicketsAll,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.ackWait,
		// Unbounded: a Postgres outage must never drop a ticket. Events
		// that can never be written go to the dead-letter stream instead.
		MaxDeliver:    -1,
		MaxAckPending: allocMaxAckPending,
		Replicas:      cfg.Replicas,
	}
	if _, err := a.consumer(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// consumer opens the allocators' durable consumer, creating or updating
// it only when it is missing or differs from a.cfg: every worker calls
// this at start, and on a cluster concurrent updates of one consumer are
// proposals that may go unanswered.
func (a *Allocator) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	c, err := a.js.Consumer(cctx, subjects.StreamTickets, subjects.ConsumerAllocators)
	if err == nil && jskit.ConfigCovers(c.CachedInfo().Config, a.cfg) {
		return c, nil
	}
	c, err = a.js.CreateOrUpdateConsumer(cctx, subjects.StreamTickets, a.cfg)
	if err != nil {
		return nil, fmt.Errorf("ensuring consumer %s on %s: %w", subjects.ConsumerAllocators, subjects.StreamTickets, err)
	}
	return c, nil
}

// Run consumes until ctx is done, then stops pulling, gives back the
// messages it had buffered, waits for the messages being handled and
// returns nil.
func (a *Allocator) Run(ctx context.Context) error {
	sem := make(chan struct{}, a.conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	// Handlers finish what they started when Run is stopped: a write
	// that commits is acked rather than redelivered.
	hctx := context.WithoutCancel(ctx)
	retry := 0
	for ctx.Err() == nil {
		if retry > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(a.backoff(retry)):
			}
		}
		cons, err := a.consumer(ctx)
		if err != nil {
			retry++
			a.log.Warn("allocator cannot reach its consumer; retrying", slog.Any("err", err))
			continue
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(a.conc))
		if err != nil {
			retry++
			a.log.Warn("allocator cannot start consuming; retrying", slog.Any("err", err))
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
				a.log.Warn("allocator pull", slog.Any("err", err))
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
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				a.handle(hctx, msg)
			}()
		}
		stop()
		it.Stop()
		if ctx.Err() == nil {
			// Closed under us (connection closed, consumer deleted).
			retry = 1
		}
	}
	return nil
}

func (a *Allocator) giveBack(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		a.log.Debug("giving back a buffered message", slog.String("subject", msg.Subject()), slog.Any("err", err))
	}
}

// handle decides one message's fate (see Allocator and decide.go) and
// settles it.
func (a *Allocator) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	stopKeepAlive := a.keepAlive(msg)
	defer stopKeepAlive()
	md, err := msg.Metadata()
	if err != nil {
		a.log.Warn("ticket event without metadata", slog.String("subject", msg.Subject()), slog.Any("err", err))
		_ = msg.NakWithDelay(a.backoff(1))
		return
	}
	d := delivery{subject: msg.Subject(), data: msg.Data(), seq: md.Sequence.Stream, delivered: md.NumDelivered,
		stored: md.Timestamp}
	log := a.log.With(slog.String("subject", d.subject), slog.Uint64("seq", d.seq), slog.Uint64("delivery", d.delivered))

	dec := decide(d)
	event := "invalid"
	if dec.writes() {
		event = dec.ev.Event
	}
	defer func() { a.m.observe(event, time.Since(start)) }()
	if dec.tenant != "" {
		log = log.With(slog.String("tenant", dec.tenant), slog.String("ticket", dec.ticket))
	}
	if dec.writes() {
		dec = a.write(ctx, log, d, dec)
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
