package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/subjects"
)

// Overload protection: what ingress refuses, at once and with Retry-After,
// instead of letting queues grow until clients time out (docs/api.md: "never a
// hang"). One Overload is shared by every listener and the NATS API of a
// process, so its bounds are per process; with several ingress processes
// the service admits their sum.
//
//   - Per tenant, a token bucket (TenantRate, TenantBurst) over every
//     authenticated public request and every NATS API request of the
//     subject's tenant: a tenant over it gets 429 rate_limited with
//     Retry-After from the bucket's refill. The internal listener's
//     validate_eta and allocate_slot are not limited per tenant: their
//     callers are services inside the network boundary, bounded by the
//     in-flight limit below.
//   - create_account and login have no tenant yet. They are limited per
//     client IP (ClientRate, ClientBurst; the connection's address, not
//     X-Forwarded-For, which any client can forge: behind a proxy that is
//     the proxy's address, so the limit becomes a global one) and their
//     concurrency is bounded (MaxAccountCreates, MaxLogins): both run
//     argon2id (19 MiB, two passes) and create_account also CREATE
//     DATABASE, so a burst of them costs memory and Postgres far beyond
//     a ticket. Past the bound: 503 overloaded, Retry-After 1.
//   - Admission (create_ticket, validate_eta, allocate_slot, cancel_ticket
//     over HTTP and NATS) holds one of MaxInFlight places for its whole
//     work; with none free the answer is 503 overloaded, Retry-After 1, at
//     once. Requests that wait on a stalled responder or stream therefore
//     cannot pile up without bound, and a client learns at once to back
//     off rather than after its own timeout.
//   - New admissions (create_ticket, validate_eta) are refused with 503
//     overloaded, Retry-After 5, while the TICKETS stream holds MaxBacklog
//     messages or more: the allocators are far behind (or down), so a
//     ticket accepted now would reach its tenant's database long after its
//     201, and the work-queue stream, which keeps every message until a
//     worker acks it, would grow without limit. cancel_ticket and GET
//     still work, and so does allocate_slot, which completes a hold made
//     before (their number is bounded by the holds outstanding). The
//     stream's message count is sampled at most every BacklogInterval,
//     not per request; between samples this process adds what it
//     publishes, so it cannot overshoot the bound on its own.
//
// Every refusal is counted: tms_ingress_rate_limited_total{limit} and
// tms_ingress_shed_total{reason}.

// OverloadConfig sets the bounds of an Overload. Zero values take the
// defaults named; a rate of 0 turns that limit off.
type OverloadConfig struct {
	// TenantRate is the requests a second one tenant may make (0: no
	// limit); TenantBurst how many it may make at once after a quiet
	// spell (0: TenantRate rounded up).
	TenantRate  float64
	TenantBurst int
	// ClientRate and ClientBurst are the same, per client IP, for
	// create_account and login (0: no limit).
	ClientRate  float64
	ClientBurst int
	// MaxInFlight bounds the admissions one process handles at once
	// (0: 512; negative: no bound).
	MaxInFlight int
	// MaxAccountCreates and MaxLogins bound the create_account and login
	// requests handled at once (0: 4 and 16; negative: no bound).
	MaxAccountCreates int
	MaxLogins         int
	// MaxBacklog is the TICKETS stream's message count at which new
	// admissions are refused (0: 100000; negative: never).
	// BacklogInterval is how often the count is sampled (0: 250 ms).
	MaxBacklog      int64
	BacklogInterval time.Duration
	// JS reads the TICKETS stream's message count; required unless
	// MaxBacklog is negative.
	JS jetstream.JetStream
	// Metrics receives the refusal counters (required).
	Metrics prometheus.Registerer
	Logger  *slog.Logger // nil: discard
	// Now is the clock of the rate limits and the backlog sampling (nil:
	// time.Now).
	Now func() time.Time
}

// Defaults of OverloadConfig.
const (
	DefaultMaxInFlight       = 512
	DefaultMaxAccountCreates = 4
	DefaultMaxLogins         = 16
	DefaultMaxBacklog        = 100_000
	DefaultBacklogInterval   = 250 * time.Millisecond
)

// Retry-After of the 503s: an in-flight bound frees within a request's
// time; a backlog drains at the allocators' pace, so its clients are sent
// away for longer.
const (
	overloadRetryAfter = 1
	backlogRetryAfter  = 5
	// backlogSampleTimeout bounds the one stream info request of a sample.
	backlogSampleTimeout = time.Second
)

// Reasons of tms_ingress_shed_total.
const (
	shedInFlight       = "in_flight"
	shedBacklog        = "backlog"
	shedAccountCreates = "account_creates"
	shedLogins         = "logins"
	shedNATSHandlers   = "nats_handlers"
)

// Overload holds the limits of one process; see OverloadConfig. Build it
// once with NewOverload and put it in every Config of the process.
type Overload struct {
	tenant  *keyedLimiter
	client  *keyedLimiter
	admit   *gate
	creates *gate
	logins  *gate
	backlog *backlog
	logger  *slog.Logger

	rateLimited *prometheus.CounterVec
	shed        *prometheus.CounterVec
}

// NewOverload returns the limits cfg describes.
func NewOverload(cfg OverloadConfig) (*Overload, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("ingress: OverloadConfig.Metrics is nil")
	}
	if cfg.MaxBacklog >= 0 && cfg.JS == nil {
		return nil, errors.New("ingress: OverloadConfig.JS is nil (needed to watch the TICKETS backlog)")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := &Overload{
		tenant:  newKeyedLimiter(cfg.TenantRate, cfg.TenantBurst, now),
		client:  newKeyedLimiter(cfg.ClientRate, cfg.ClientBurst, now),
		admit:   newGate(cfg.MaxInFlight, DefaultMaxInFlight),
		creates: newGate(cfg.MaxAccountCreates, DefaultMaxAccountCreates),
		logins:  newGate(cfg.MaxLogins, DefaultMaxLogins),
		logger:  logger,
	}
	if cfg.MaxBacklog >= 0 {
		o.backlog = &backlog{js: cfg.JS, max: cfg.MaxBacklog, every: cfg.BacklogInterval, now: now, logger: logger}
		if o.backlog.max == 0 {
			o.backlog.max = DefaultMaxBacklog
		}
		if o.backlog.every <= 0 {
			o.backlog.every = DefaultBacklogInterval
		}
	}
	var err error
	o.rateLimited, err = register(cfg.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_ingress_rate_limited_total",
		Help: "Requests refused with 429 by a rate limit, by limit (tenant, client_ip).",
	}, []string{"limit"}))
	if err != nil {
		return nil, err
	}
	o.shed, err = register(cfg.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_ingress_shed_total",
		Help: "Requests refused with 503 to shed load, by reason (in_flight, backlog, account_creates, logins, nats_handlers).",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	return o, nil
}

// overloadOf is cfg.Overload, or limits with the defaults when the caller
// gave none (then per router, not per process).
func overloadOf(cfg Config, logger *slog.Logger) (*Overload, error) {
	if cfg.Overload != nil {
		return cfg.Overload, nil
	}
	oc := OverloadConfig{JS: cfg.JS, Metrics: cfg.Metrics, Logger: logger}
	if cfg.JS == nil {
		oc.MaxBacklog = -1
	}
	return NewOverload(oc)
}

// limitTenant takes one request from tenant's bucket: nil, or a 429.
func (o *Overload) limitTenant(tenant string) error {
	wait, ok := o.tenant.allow(tenant)
	if ok {
		return nil
	}
	o.rateLimited.WithLabelValues("tenant").Inc()
	return errRateLimited(wait, "this tenant is over its request rate")
}

// limitClient takes one request from the client address's bucket.
func (o *Overload) limitClient(addr string) error {
	wait, ok := o.client.allow(addr)
	if ok {
		return nil
	}
	o.rateLimited.WithLabelValues("client_ip").Inc()
	return errRateLimited(wait, "too many requests from this address")
}

// enterAdmission takes an admission place; release gives it back. With
// none free it returns a 503.
func (o *Overload) enterAdmission() (release func(), err error) {
	return o.enter(o.admit, shedInFlight)
}

func (o *Overload) enter(g *gate, reason string) (func(), error) {
	if g.enter() {
		return g.leave, nil
	}
	o.shed.WithLabelValues(reason).Inc()
	return nil, errOverloaded(overloadRetryAfter)
}

// enterNewAdmission is the gate of a request that may reserve a new slot
// (create_ticket, validate_eta): the backlog bound, then an admission
// place.
func (o *Overload) enterNewAdmission(ctx context.Context) (release func(), err error) {
	if err := o.checkBacklog(ctx); err != nil {
		return nil, err
	}
	return o.enterAdmission()
}

// checkBacklog refuses a new admission while the TICKETS stream is
// saturated.
func (o *Overload) checkBacklog(ctx context.Context) error {
	if o.backlog == nil || !o.backlog.saturated(ctx) {
		return nil
	}
	o.shed.WithLabelValues(shedBacklog).Inc()
	return errOverloaded(backlogRetryAfter)
}

// published counts a message this process added to the TICKETS stream.
func (o *Overload) published() {
	if o.backlog != nil {
		o.backlog.added()
	}
}

// shedNATS counts a NATS API request refused because every handler is busy.
func (o *Overload) shedNATS() error {
	o.shed.WithLabelValues(shedNATSHandlers).Inc()
	return errOverloaded(overloadRetryAfter)
}

// limitTenantHTTP is middleware behind authenticate: the session's tenant
// pays one token per request.
func (a *api) limitTenantHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.overload.limitTenant(sessionFrom(r.Context()).tenant.ID); err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitUnauthenticated is middleware for create_account and login: the
// client address pays one token, then the request takes a place of g.
func (a *api) limitUnauthenticated(g *gate, reason string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := a.overload.limitClient(clientAddr(r)); err != nil {
				writeError(w, r, a.logger, err)
				return
			}
			release, err := a.overload.enter(g, reason)
			if err != nil {
				writeError(w, r, a.logger, err)
				return
			}
			defer release()
			next.ServeHTTP(w, r)
		})
	}
}

// clientAddr is the IP of the connection's peer. Forwarding headers are
// not believed: any client can set them.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// gate bounds how many callers are inside at once; nil admits everyone.
type gate struct {
	max int64
	n   atomic.Int64
}

// newGate bounds to n (0: def; negative: nil, no bound).
func newGate(n, def int) *gate {
	switch {
	case n < 0:
		return nil
	case n == 0:
		n = def
	}
	return &gate{max: int64(n)}
}

func (g *gate) enter() bool {
	if g == nil {
		return true
	}
	if g.n.Add(1) > g.max {
		g.n.Add(-1)
		return false
	}
	return true
}

func (g *gate) leave() {
	if g != nil {
		g.n.Add(-1)
	}
}

// backlog is the TICKETS stream's message count as last sampled, plus
// what this process published since.
type backlog struct {
	js     jetstream.JetStream
	max    int64
	every  time.Duration
	now    func() time.Time
	logger *slog.Logger

	mu       sync.Mutex
	count    int64
	at       time.Time // of the last sample; zero: never sampled
	sampling bool
}

// saturated reports whether the stream holds max messages or more. One
// caller at a time refreshes a stale count, inside its own request (one
// stream info, bounded by backlogSampleTimeout); the others go on with the
// count they have. A failed sample keeps the old count: if the stream
// cannot be read, publishes fail and answer 503 on their own.
func (b *backlog) saturated(ctx context.Context) bool {
	now := b.now()
	b.mu.Lock()
	refresh := !b.sampling && (b.at.IsZero() || now.Sub(b.at) >= b.every)
	if refresh {
		b.sampling = true
	}
	n := b.count
	b.mu.Unlock()
	if !refresh {
		return n >= b.max
	}

	got, err := b.sample(ctx)
	b.mu.Lock()
	b.sampling = false
	b.at = now
	if err == nil {
		b.count = got
		n = got
	} else {
		n = b.count
	}
	b.mu.Unlock()
	if err != nil {
		b.logger.Warn("sampling the TICKETS backlog", slog.Any("err", err))
	}
	return n >= b.max
}

func (b *backlog) sample(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, backlogSampleTimeout)
	defer cancel()
	st, err := b.js.Stream(ctx, subjects.StreamTickets)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // no ticket published yet
	}
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", subjects.StreamTickets, err)
	}
	msgs := st.CachedInfo().State.Msgs
	return int64(min(msgs, uint64(1<<62))), nil
}

func (b *backlog) added() {
	b.mu.Lock()
	b.count++
	b.mu.Unlock()
}
