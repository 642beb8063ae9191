// Package admission is ticket admission with no transport: create,
// cancel, get, validate_eta and allocate_slot for a tenant the caller has
// resolved, answered with domain results and the errors of errors.go. The
// HTTP routers and the NATS API of package ingress decode a request, call
// one Service (one per process) and map its answer onto theirs.
package admission

import (
	"context"
	"errors"
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
	// Published counts a message added to the TICKETS stream.
	Published()
}

// Config holds what a Service needs. NC, JS and Tickets are required.
type Config struct {
	// NC carries requests to the ETA responders; JS publishes ticket
	// events to the TICKETS stream and keeps Idempotency-Key records.
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
	// Replicas is the replica count of the TICKETS stream and the
	// idempotency bucket when admission is the first to need them (0: 1).
	Replicas int
	Logger   *slog.Logger     // nil: discard
	Now      func() time.Time // the clock for the times admission makes (nil: time.Now)
	// BeforePublish, when set, is called with the ticket id after a
	// slot was reserved for a ticket and before its event is published:
	// a fault-injection point for tests (a crash there leaves an orphan
	// reservation). nil: nothing.
	BeforePublish func(ticket string)
	// Gate is passed by every admission (nil: no gate).
	Gate Gate
}

// Service is ticket admission as every transport sees it: the HTTP
// handlers and the NATS API call the same methods, so both give the same
// answers. It never writes slot buckets: it asks the ETA responders
// (reserve, hold, confirm, release) and publishes ticket events to the
// TICKETS stream, which the allocator workers write into tenant databases.
// Every method takes a tenant the caller has resolved.
type Service struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	rows   *tenants.Tickets
	agents *tenants.Agents
	// budget is subjects.DefaultBudget with Config.ETATimeout: its ETA
	// bounds a request to the responders, its Publish one publish to, or
	// read from, the TICKETS stream.
	budget        subjects.Budget
	replicas      int
	logger        *slog.Logger
	now           func() time.Time
	beforePublish func(ticket string)
	gate          Gate

	// The TICKETS stream and the idempotency bucket, once found or
	// created: read without a lock on every admission; opening takes mu,
	// so that two first callers do not both create them.
	mu     sync.Mutex
	stream atomic.Pointer[jetstream.Stream]
	idem   atomic.Pointer[jetstream.KeyValue]
}

// New checks cfg and returns the service. The stream and the bucket are
// opened on first use (the stream created then if no worker has made it
// yet), and kept from the first success.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.NC == nil:
		return nil, errors.New("admission: Config.NC is nil")
	case cfg.JS == nil:
		return nil, errors.New("admission: Config.JS is nil")
	case cfg.Tickets == nil:
		return nil, errors.New("admission: Config.Tickets is nil")
	}
	return newService(cfg), nil
}

// newService is New without the checks.
func newService(cfg Config) *Service {
	s := &Service{
		nc: cfg.NC, js: cfg.JS, rows: cfg.Tickets, agents: cfg.Agents,
		budget: subjects.DefaultBudget.WithETA(cfg.ETATimeout), replicas: cfg.Replicas,
		logger: cfg.Logger, now: cfg.Now, beforePublish: cfg.BeforePublish, gate: cfg.Gate,
	}
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

// published counts a message this process added to the TICKETS stream.
func (s *Service) published() {
	if s.gate != nil {
		s.gate.Published()
	}
}
