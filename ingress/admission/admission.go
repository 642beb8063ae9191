// Package admission is ticket admission with no transport: create,
// cancel, get, validate_eta and allocate_slot, and the capacity, re-plan
// and at-risk questions of feasibility admission, for a tenant the caller
// has resolved, answered with domain results and the errors of errors.go. The
// HTTP routers and the NATS API of package ingress decode a request, call
// one Service (one per process) and map its answer onto theirs.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// callTimeout bounds every call admission makes to the idempotency bucket
// or a tenant database (the timing budget's Call, which the idempotency
// claim adds up).
var callTimeout = subjects.DefaultBudget.Call

// Gate is the overload protection admission passes through (package
// ingress's Overload): its errors are returned unchanged, for the
// transport to answer.
type Gate interface {
	// EnterNewAdmission takes a place for a request that may reserve a
	// new slot (create_ticket, validate_eta); release gives it back.
	EnterNewAdmission(ctx context.Context, tenant string) (release func(), err error)
	// EnterAdmission takes a place for any other admission
	// (allocate_slot, cancel_ticket).
	EnterAdmission(tenant string) (release func(), err error)
	// Published counts a record the responders wrote for this process
	// (a ticket, a hold or a cancel), which the allocators have yet to
	// read: their backlog grows by one.
	Published()
}

// Config holds what a Service needs. NC, JS and Tickets are required.
type Config struct {
	// NC carries requests to the ETA responders; JS reads the slot
	// buckets and keeps Idempotency-Key records.
	NC      *nats.Conn
	JS      jetstream.JetStream
	Tickets *tenants.Tickets // ticket rows already written by the allocators
	// Agents gives the revision of each tenant's last agent write
	// (read-your-writes of agent changes; nil: none). Give it the one the
	// agent routes write through, with its Run running.
	Agents *tenants.Agents
	// ETATimeout bounds one request to the ETA responders (0:
	// subjects.DefaultBudget.ETA, 2 s); no answer within it is
	// ErrUnavailable.
	ETATimeout time.Duration
	// Replicas is the replica count of the idempotency bucket when
	// admission is the first to need it (0: 1).
	Replicas int
	// Shards is the number of slot buckets (0: subjects.DefaultSlotShards),
	// as the responders have it.
	Shards int
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // the clock for the times admission makes (nil: time.Now)
	// AfterReserve, when set, is called with the ticket id once the
	// responders have admitted a ticket (reserve or confirm answered) and
	// before the answer goes out: a fault-injection point for tests (a
	// crash there leaves a ticket its client never heard of). nil:
	// nothing.
	AfterReserve func(ticket string)
	// Gate is passed by every admission (nil: no gate).
	Gate Gate
}

// Service is ticket admission as every transport sees it: the HTTP
// handlers and the NATS API call the same methods, so both give the same
// answers. It never writes slot buckets: it asks the ETA responders
// (reserve, hold, confirm, release; capacity, replan and at_risk), whose
// write of a ticket's slot record is the ticket's hand-off to the
// allocator workers; it reads tickets back from those records and from
// the tenant databases. Every method takes a tenant the caller has
// resolved.
type Service struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	rows   *tenants.Tickets
	agents *tenants.Agents
	// budget is subjects.DefaultBudget with Config.ETATimeout: its ETA
	// bounds a request to the responders, its Call a read of a slot
	// bucket.
	budget       subjects.Budget
	replicas     int
	shards       int
	logger       *slog.Logger
	now          func() time.Time
	afterReserve func(ticket string)
	gate         Gate

	// The slot buckets (one per shard) and the idempotency bucket, once
	// found: read without a lock on every admission. A slot bucket is
	// only opened (the responders create it); two first callers may both
	// open it, harmlessly. Creating the idempotency bucket takes mu, so
	// that two first callers do not both create it.
	slots []atomic.Pointer[jetstream.KeyValue]
	// parked is subjects.StreamParked once opened (read only by lookups
	// of tickets whose slot record is gone).
	parked atomic.Pointer[jetstream.Stream]
	mu     sync.Mutex
	idem   atomic.Pointer[jetstream.KeyValue]
}

// New checks cfg and returns the service. The buckets are opened on first
// use (the idempotency bucket created then if it does not exist yet), and
// kept from the first success.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.NC == nil:
		return nil, errors.New("admission: Config.NC is nil")
	case cfg.JS == nil:
		return nil, errors.New("admission: Config.JS is nil")
	case cfg.Tickets == nil:
		return nil, errors.New("admission: Config.Tickets is nil")
	case cfg.Shards < 0:
		return nil, fmt.Errorf("admission: Config.Shards is %d", cfg.Shards)
	}
	return newService(cfg), nil
}

// newService is New without the checks.
func newService(cfg Config) *Service {
	s := &Service{
		nc: cfg.NC, js: cfg.JS, rows: cfg.Tickets, agents: cfg.Agents,
		budget: subjects.DefaultBudget.WithETA(cfg.ETATimeout), replicas: cfg.Replicas, shards: cfg.Shards,
		logger: cfg.Logger, now: cfg.Now, afterReserve: cfg.AfterReserve, gate: cfg.Gate,
	}
	if s.shards == 0 {
		s.shards = subjects.DefaultSlotShards
	}
	s.slots = make([]atomic.Pointer[jetstream.KeyValue], s.shards)
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// enterNew passes the gate of a request that may reserve a new slot.
func (s *Service) enterNew(ctx context.Context, tenant string) (func(), error) {
	if s.gate == nil {
		return func() {}, nil
	}
	return s.gate.EnterNewAdmission(ctx, tenant)
}

// enter passes the gate of any other admission.
func (s *Service) enter(tenant string) (func(), error) {
	if s.gate == nil {
		return func() {}, nil
	}
	return s.gate.EnterAdmission(tenant)
}

// published counts a record the responders wrote for this process.
func (s *Service) published() {
	if s.gate != nil {
		s.gate.Published()
	}
}

// slotBucket returns the slot bucket of tenant's shard, opened on first
// use. A bucket that does not exist yet (no responder has started) is an
// error wrapping jetstream.ErrBucketNotFound, and is looked for again
// next time.
// parkedStream opens subjects.StreamParked once; an error wraps
// jetstream.ErrStreamNotFound while no allocator has made it.
func (s *Service) parkedStream(ctx context.Context) (jetstream.Stream, error) {
	if st := s.parked.Load(); st != nil {
		return *st, nil
	}
	st, err := s.js.Stream(ctx, subjects.StreamParked)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", subjects.StreamParked, err)
	}
	s.parked.Store(&st)
	return st, nil
}

func (s *Service) slotBucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	shard := subjects.SlotShard(tenant, s.shards)
	if kv := s.slots[shard].Load(); kv != nil {
		return *kv, nil
	}
	kv, err := s.js.KeyValue(ctx, subjects.SlotBucket(shard))
	if err != nil {
		return nil, fmt.Errorf("opening slot bucket %s: %w", subjects.SlotBucket(shard), err)
	}
	s.slots[shard].Store(&kv)
	return kv, nil
}
