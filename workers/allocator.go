package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
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

// handle decides one message's fate (see Allocator) and settles it.
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
	kind := "invalid"
	defer func() { a.m.observe(kind, time.Since(start)) }()
	log := a.log.With(slog.String("subject", msg.Subject()), slog.Uint64("seq", md.Sequence.Stream),
		slog.Uint64("delivery", md.NumDelivered))

	tenant, ticket, err := subjects.ParseTicketSubject(msg.Subject())
	if err != nil {
		a.deadLetter(ctx, log, msg, md, "", "", "invalid", "subject: "+err.Error())
		return
	}
	log = log.With(slog.String("tenant", tenant), slog.String("ticket", ticket))
	ev, err := decodeTicketEvent(msg.Data(), tenant, ticket)
	if err != nil {
		a.deadLetter(ctx, log, msg, md, tenant, ticket, "invalid", err.Error())
		return
	}
	kind = ev.Event
	if ev.Event == subjects.TicketCancelled && ev.CancelledAt == nil {
		at := md.Timestamp.UTC()
		ev.CancelledAt = &at
	}
	ten, err := a.reg.Get(ctx, tenant)
	switch {
	case errors.Is(err, tenants.ErrTenantNotFound):
		a.deadLetter(ctx, log, msg, md, tenant, ticket, "unknown_tenant", "unknown tenant "+tenant)
		return
	case err != nil:
		a.retry(log, msg, md, "registry", err)
		return
	}

	if a.beforeCommit != nil {
		a.beforeCommit(ticket)
	}
	err = a.apply(ctx, ten, ev)
	for round := 0; round < allocConflictRounds; round++ {
		conflict, ok := errors.AsType[*tenants.SlotConflictError](err)
		if !ok {
			break
		}
		resolved, rerr := a.resolveConflict(ctx, log, ten, conflict.Ticket)
		if rerr != nil {
			err = rerr
			break
		}
		if !resolved {
			break
		}
		err = a.apply(ctx, ten, ev)
	}

	conflict, isConflict := errors.AsType[*tenants.SlotConflictError](err)
	switch {
	case err == nil:
		if a.afterCommit != nil {
			a.afterCommit(ticket)
		}
		a.forgetConflict(md.Sequence.Stream)
		actx, cancel := withNATSDeadline(ctx)
		defer cancel()
		if err := msg.DoubleAck(actx); err != nil {
			// Written; the redelivery will find it there.
			log.Warn("ticket written but its ack failed", slog.Any("err", err))
		}
		a.m.processed(ev.Event)
		log.Debug("ticket event written", slog.String("event", ev.Event))
	case errors.Is(err, tenants.ErrUnavailable):
		a.retry(log, msg, md, "unavailable", err)
	case errors.Is(err, tenants.ErrInvalidTicket):
		a.deadLetter(ctx, log, msg, md, tenant, ticket, "invalid", err.Error())
	case isConflict:
		n := a.countConflict(md.Sequence.Stream)
		if n >= allocMaxConflictTries {
			a.forgetConflict(md.Sequence.Stream)
			a.deadLetter(ctx, log.With(slog.String("holder", conflict.Ticket)), msg, md, tenant, ticket,
				"double_booking", "double booking refused by Postgres: agent "+ev.Agent+" at "+
					ev.SlotTime.UTC().Format(time.RFC3339)+" is held by live ticket "+conflict.Ticket)
			return
		}
		a.m.failed("conflict")
		delay := a.backoff(n)
		log.Warn("slot held by another live ticket; retrying, its cancel may be on its way",
			slog.String("holder", conflict.Ticket), slog.Int("try", n), slog.Duration("delay", delay))
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn("nak failed; the message comes back after the ack wait", slog.Any("err", err))
		}
	default:
		if md.NumDelivered >= allocMaxErrorDeliveries {
			a.deadLetter(ctx, log, msg, md, tenant, ticket, "error", err.Error())
			return
		}
		a.retry(log, msg, md, "error", err)
	}
}

// apply writes one validated event with a deadline of its own.
func (a *Allocator) apply(ctx context.Context, ten tenants.Tenant, ev subjects.TicketEvent) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	defer cancel()
	if ev.Event == subjects.TicketCancelled {
		return a.tickets.ApplyCancelled(dctx, ten, ev)
	}
	return a.tickets.ApplyCreated(dctx, ten, ev)
}

// resolveConflict looks at the latest event of the ticket that holds the
// minute. If it is a cancel, the cancel is applied now (the stream will
// bring it again later; applying it twice is harmless) and true is
// returned: the write can be retried.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, ten tenants.Tenant, holder string) (bool, error) {
	if subjects.ValidID(holder) != nil {
		return false, nil
	}
	gctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	raw, err := a.stream.GetLastMsgForSubject(gctx, subjects.TicketSubject(ten.ID, holder))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the latest event of ticket %s: %w: %w", holder, tenants.ErrUnavailable, err)
	}
	ev, err := decodeTicketEvent(raw.Data, ten.ID, holder)
	if err != nil || ev.Event != subjects.TicketCancelled {
		// A bad cancel is dead-lettered when its own turn comes.
		return false, nil
	}
	if ev.CancelledAt == nil {
		at := raw.Time.UTC()
		ev.CancelledAt = &at
	}
	if err := a.apply(ctx, ten, ev); err != nil {
		if errors.Is(err, tenants.ErrUnavailable) {
			return false, err
		}
		// The cancel's own delivery reports what is wrong with it; this
		// create stays a plain conflict.
		log.Warn("the holder's pending cancel could not be applied", slog.String("holder", holder), slog.Any("err", err))
		return false, nil
	}
	log.Info("applied the holder's pending cancel before the create that retakes its slot",
		slog.String("holder", holder))
	return true, nil
}

func (a *Allocator) retry(log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, err error) {
	a.m.failed(reason)
	delay := a.backoff(int(md.NumDelivered))
	log.Warn("ticket event not written; redelivering later", slog.String("reason", reason),
		slog.Duration("delay", delay), slog.Any("err", err))
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		log.Warn("nak failed; the message comes back after the ack wait", slog.Any("err", nerr))
	}
}

// deadLetter parks the raw message on the dead-letter stream with the
// reason, logs an error, and terminates it. If the dead letter cannot be
// published, the message is redelivered instead: never dropped.
func (a *Allocator) deadLetter(ctx context.Context, log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata,
	tenant, ticket, kind, reason string) {
	subject := subjects.DeadLetterInvalid
	if tenant != "" && ticket != "" {
		subject = subjects.DeadLetterSubject(tenant, ticket)
	}
	reason = headerValue(reason)
	dl := &nats.Msg{Subject: subject, Data: msg.Data(), Header: nats.Header{}}
	for k, vs := range msg.Headers() {
		// The original's Nats-* headers (message id, expectations) would
		// dedupe or fail the dead letter itself.
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		dl.Header[k] = append([]string(nil), vs...)
	}
	dl.Header.Set(subjects.HeaderDeadLetterReason, reason)
	dl.Header.Set(subjects.HeaderOriginalSubject, headerValue(msg.Subject()))
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	dl.Header.Set(subjects.HeaderOriginalSequence, seq)
	pctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	if _, err := a.js.PublishMsg(pctx, dl, jetstream.WithMsgID("dlq-"+seq),
		jetstream.WithExpectStream(subjects.StreamDeadLetters)); err != nil {
		a.retry(log, msg, md, "dead_letter_publish", err)
		return
	}
	a.m.deadLettered(kind)
	log.Error("ticket event dead-lettered", slog.String("kind", kind), slog.String("reason", reason),
		slog.String("dead_letter_subject", subject))
	if err := msg.TermWithReason(kind); err != nil {
		// Parked already; a redelivery dead-letters it again under the
		// same message id, which the stream dedupes.
		log.Warn("term failed after dead-lettering", slog.Any("err", err))
	}
}

// headerValue keeps a header value on one line and bounded.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
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

func (a *Allocator) countConflict(seq uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if len(a.conflicts) > 4096 {
		// Entries of messages another process finished stay behind.
		for k, c := range a.conflicts {
			if now.Sub(c.last) > time.Hour {
				delete(a.conflicts, k)
			}
		}
	}
	c := a.conflicts[seq]
	c.n++
	c.last = now
	a.conflicts[seq] = c
	return c.n
}

func (a *Allocator) forgetConflict(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conflicts, seq)
}

// decodeTicketEvent reads a ticket event strictly (unknown fields, trailing data
// and oversize bodies refused) and checks it against its subject's tenant
// and ticket, the SLA of its type and the window rule of docs/api.md.
func decodeTicketEvent(data []byte, tenant, ticket string) (subjects.TicketEvent, error) {
	var ev subjects.TicketEvent
	if len(data) > allocMaxEventBytes {
		return ev, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidEvent, len(data), allocMaxEventBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("%w: json: %v", ErrInvalidEvent, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ev, fmt.Errorf("%w: data after the JSON object", ErrInvalidEvent)
	}
	sla, ok := subjects.SLA(ev.Type)
	switch {
	case ev.Event != subjects.TicketCreated && ev.Event != subjects.TicketCancelled:
		return ev, fmt.Errorf("%w: event %q", ErrInvalidEvent, ev.Event)
	case ev.Tenant != tenant:
		return ev, fmt.Errorf("%w: body tenant %q differs from the subject's %q", ErrInvalidEvent, ev.Tenant, tenant)
	case ev.Ticket != ticket:
		return ev, fmt.Errorf("%w: body ticket %q differs from the subject's %q", ErrInvalidEvent, ev.Ticket, ticket)
	case !ok:
		return ev, fmt.Errorf("%w: ticket type %q", ErrInvalidEvent, ev.Type)
	case subjects.ValidID(ev.Agent) != nil:
		return ev, fmt.Errorf("%w: agent id %q", ErrInvalidEvent, ev.Agent)
	case ev.CreatedAt.IsZero():
		return ev, fmt.Errorf("%w: no created_at", ErrInvalidEvent)
	case ev.SlotTime.IsZero() || !ev.SlotTime.Equal(ev.SlotTime.Truncate(time.Minute)):
		return ev, fmt.Errorf("%w: slot_time %s is not a whole minute", ErrInvalidEvent, ev.SlotTime.Format(time.RFC3339Nano))
	case !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
		return ev, fmt.Errorf("%w: deadline %s is not created_at + %s", ErrInvalidEvent, ev.Deadline.Format(time.RFC3339Nano), sla)
	case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
		return ev, fmt.Errorf("%w: slot_time %s outside the window [%s, %s]", ErrInvalidEvent,
			ev.SlotTime.Format(time.RFC3339), ev.CreatedAt.Format(time.RFC3339Nano), ev.Deadline.Format(time.RFC3339Nano))
	case ev.Event == subjects.TicketCreated && ev.CancelledAt != nil:
		return ev, fmt.Errorf("%w: a created event with cancelled_at", ErrInvalidEvent)
	}
	return ev, nil
}

// allocatorMetrics are the allocator's Prometheus collectors; a nil
// *allocatorMetrics records nothing.
type allocatorMetrics struct {
	processedTotal    *prometheus.CounterVec
	failedTotal       *prometheus.CounterVec
	deadLetteredTotal *prometheus.CounterVec
	handleSeconds     *prometheus.HistogramVec
}

func newAllocatorMetrics(reg prometheus.Registerer) (*allocatorMetrics, error) {
	m := &allocatorMetrics{
		processedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_processed_total",
			Help: "Ticket events written into tenant databases and acked, by event.",
		}, []string{"event"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_failed_total",
			Help: "Ticket event deliveries given back for redelivery, by reason (unavailable, conflict, registry, error, dead_letter_publish).",
		}, []string{"reason"}),
		deadLetteredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_dead_lettered_total",
			Help: "Ticket events parked on the dead-letter stream, by kind (invalid, unknown_tenant, double_booking, error).",
		}, []string{"kind"}),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tms_allocator_handle_seconds",
			Help:    "Time to handle one ticket event delivery, by event.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"event"}),
	}
	var err error
	if m.processedTotal, err = ops.Register(reg, m.processedTotal); err != nil {
		return nil, err
	}
	if m.failedTotal, err = ops.Register(reg, m.failedTotal); err != nil {
		return nil, err
	}
	if m.deadLetteredTotal, err = ops.Register(reg, m.deadLetteredTotal); err != nil {
		return nil, err
	}
	if m.handleSeconds, err = ops.Register(reg, m.handleSeconds); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *allocatorMetrics) processed(event string) {
	if m != nil {
		m.processedTotal.WithLabelValues(event).Inc()
	}
}

func (m *allocatorMetrics) failed(reason string) {
	if m != nil {
		m.failedTotal.WithLabelValues(reason).Inc()
	}
}

func (m *allocatorMetrics) deadLettered(kind string) {
	if m != nil {
		m.deadLetteredTotal.WithLabelValues(kind).Inc()
	}
}

func (m *allocatorMetrics) observe(event string, d time.Duration) {
	if m != nil {
		m.handleSeconds.WithLabelValues(event).Observe(d.Seconds())
	}
}
