package ingress

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/admission"
	"tms/ops"
	"tms/subjects"
)

// An Overload is the gate the admission service passes.
var _ admission.Gate = (*Overload)(nil)

// Overload protection: what ingress refuses, and when, so that queues
// cannot grow until clients time out (docs/api.md: "never a hang") while the
// ordinary use of one client is never turned away. One Overload is shared
// by every listener and the NATS API of a process, so its bounds are per
// process; with several ingress processes the service admits their sum.
//
//   - Admission (create_ticket, validate_eta, allocate_slot, cancel_ticket
//     over HTTP and NATS) passes the fair-share limiter (fairshare.go):
//     at most MaxInFlight admissions at once, past that 503 overloaded,
//     Retry-After 1, at once. While the process shows a standing queue
//     (the fastest admission of each AdmissionInterval, or more than a
//     tenth of them, slower than AdmissionTarget or a multiple of the
//     floor) and two or more tenants are asking, the process admits an AIMD-controlled number
//     of admissions per interval, split max-min fair among the tenants:
//     a tenant over its share gets 429 rate_limited, Retry-After 1 (on
//     the NATS API before its request takes a handler), so the tenant
//     sending far more than the process can serve is shed first and the
//     others keep their latency. Past SoftInFlight
//     admissions in flight, a tenant holding its share of them is shed
//     the same way. A tenant alone, or one admitted fewer than 100 times
//     a second, is never shed by the fair share.
//   - Optionally (TenantRate, off by default) a hard cap per tenant, a
//     token bucket over every authenticated public request and every NATS
//     API request of the subject's tenant: 429 rate_limited with
//     Retry-After from the bucket's refill. The internal listener's
//     validate_eta and allocate_slot are not capped: their callers are
//     services inside the network boundary.
//   - create_account and login have no tenant yet. Both run argon2id (19
//     MiB, two passes) and create_account also CREATE DATABASE, so their
//     concurrency is bounded (MaxAccountCreates, MaxLogins; gate.go): a request
//     that finds every place taken waits its turn, first come first
//     served, up to QueueWait (and with at most queueFactor x the bound
//     waiting), then gets 503 overloaded, Retry-After 1. A provisioning
//     script opening accounts several at a time therefore waits a little
//     instead of being refused.
//   - Password guessing: failed create_account and login attempts (any
//     4xx but a 429 or a 409: wrong password, unknown client, malformed
//     body; an e-mail already taken is what a provisioning script run
//     again meets, not guessing) are counted per client address and per
//     claimed client_id (failureLimiter, ratelimit.go): after a third of MaxFailures an
//     address or client_id may try once a second, at MaxFailures it is
//     locked out for Lockout (429 rate_limited, Retry-After the time
//     left). Successes are not counted. The client_id lockout does not
//     apply from an address the tenant has logged in or opened its
//     account from (trustSet), so guessers elsewhere cannot lock a
//     tenant out of its own address. Addresses are the connection's
//     (never X-Forwarded-For, which any client can forge: behind a proxy
//     every client is the proxy, so the address limits become global).
//   - create_account is also limited per client address (ClientRate,
//     ClientBurst; a generous token bucket): every attempt creates, or
//     may create, a database.
//   - New admissions (create_ticket, validate_eta) are refused with 503
//     overloaded, Retry-After 5, while the allocators are MaxBacklog slot
//     records or more behind (summed over the shards: what their
//     consumers have not delivered or not seen acked): they are far
//     behind (or down), so a ticket accepted now would reach its tenant's
//     database long after its 201, perhaps after its record has aged
//     out. cancel_ticket and GET still work, and so does allocate_slot,
//     which completes a hold made before (their number is bounded by the
//     holds outstanding). The lag is sampled (backlog.go) at most every
//     BacklogInterval, not per request; between samples this process adds
//     the records it had written, so it cannot overshoot the bound on its
//     own.
//
// The rate limits (the tenant and client_ip buckets, the failure counts,
// the fair share where it refuses) say where the client stands in the
// RateLimit and RateLimit-Policy fields (ratelimit.go), on the answers
// they allow and on their 429s.
//
// Every refusal is counted: tms_ingress_rate_limited_total{limit} and
// tms_ingress_shed_total{reason}; the wait of create_account and login
// for a place is tms_ingress_queue_wait_seconds{route}.

// OverloadConfig sets the bounds of an Overload. Zero values take the
// defaults named; a rate of 0 turns that limit off.
type OverloadConfig struct {
	// TenantRate is the requests a second one tenant may make (0: no
	// limit); TenantBurst how many it may make at once after a quiet
	// spell (0: TenantRate rounded up).
	TenantRate  float64
	TenantBurst int
	// ClientRate and ClientBurst are the same, per client address, for
	// create_account (0: no limit).
	ClientRate  float64
	ClientBurst int
	// MaxFailures is the failed create_account and login attempts of one
	// client address, or against one client_id, at which it is locked
	// out for Lockout (0: not counted; Lockout 0: 5 min).
	MaxFailures int
	Lockout     time.Duration
	// MaxInFlight bounds the admissions one process handles at once
	// (0: 512; negative: no bound).
	MaxInFlight int
	// SoftInFlight is the admissions in flight past which a tenant
	// holding its share of them is shed (0: 64; negative: never);
	// AdmissionTarget the latency of the fastest admission of an
	// AdmissionInterval above which the process counts as saturated
	// (0: 5 ms; negative: never; AdmissionInterval 0: 100 ms).
	SoftInFlight      int
	AdmissionTarget   time.Duration
	AdmissionInterval time.Duration
	// MaxAccountCreates and MaxLogins bound the create_account and login
	// requests handled at once (0: 8 and 16; negative: no bound);
	// QueueWait is how long one waits for a place (0: 2 s; negative: it
	// does not wait).
	MaxAccountCreates int
	MaxLogins         int
	QueueWait         time.Duration
	// MaxBacklog is the allocators' lag, in slot records, at which new
	// admissions are refused (0: 100000; negative: never).
	// BacklogInterval is how often the count is sampled (0: 250 ms).
	MaxBacklog      int64
	BacklogInterval time.Duration
	// JS reads the allocators' consumers and the slot streams; required
	// unless MaxBacklog is negative. Shards is the slot shard count (0:
	// subjects.DefaultSlotShards).
	JS     jetstream.JetStream
	Shards int
	// Metrics receives the refusal counters (required).
	Metrics prometheus.Registerer
	Logger  *slog.Logger // nil: discard
	// Now is the clock of the rate, failure and fair-share limits and of
	// the backlog sampling (nil: time.Now).
	Now func() time.Time
}

// Defaults of OverloadConfig.
const (
	DefaultMaxInFlight       = 512
	DefaultSoftInFlight      = 64
	DefaultAdmissionTarget   = 5 * time.Millisecond
	DefaultAdmissionInterval = 100 * time.Millisecond
	DefaultMaxAccountCreates = 8
	DefaultMaxLogins         = 16
	DefaultQueueWait         = 2 * time.Second
	DefaultLockout           = 5 * time.Minute
	DefaultMaxBacklog        = 100_000
	DefaultBacklogInterval   = 250 * time.Millisecond
)

// Retry-After of the 503s: an in-flight bound frees within a request's
// time; a backlog drains at the allocators' pace, so its clients are sent
// away for longer.
const (
	overloadRetryAfter = 1
	backlogRetryAfter  = 5
)

// Reasons of tms_ingress_shed_total.
const (
	shedInFlight       = "in_flight"
	shedBacklog        = "backlog"
	shedAccountCreates = "account_creates"
	shedLogins         = "logins"
	shedNATSHandlers   = "nats_handlers"
)

// Limits of tms_ingress_rate_limited_total.
const (
	limitTenant         = "tenant"
	limitFairShare      = "fair_share"
	limitClientIP       = "client_ip"
	limitFailuresAddr   = "failures_address"
	limitFailuresClient = "failures_client_id"
)

// Overload holds the limits of one process; see OverloadConfig. Build it
// once with NewOverload and put it in every Config of the process.
type Overload struct {
	tenant     *keyedLimiter
	client     *keyedLimiter
	failAddr   *failureLimiter
	failClient *failureLimiter
	// The RateLimit policies of failAddr and failClient (tenant and
	// client carry their own).
	failAddrPolicy   *rateLimitPolicy
	failClientPolicy *rateLimitPolicy
	trusted          *trustSet
	admit            *fairShare
	creates          *gate
	logins           *gate
	backlog          *backlog
	logger           *slog.Logger

	rateLimited *prometheus.CounterVec
	shed        *prometheus.CounterVec
	queueWait   *prometheus.HistogramVec
}

// NewOverload returns the limits cfg describes.
func NewOverload(cfg OverloadConfig) (*Overload, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("ingress: OverloadConfig.Metrics is nil")
	}
	if cfg.MaxBacklog >= 0 && cfg.JS == nil {
		return nil, errors.New("ingress: OverloadConfig.JS is nil (needed to watch the allocators' backlog)")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lockout := orDefault(cfg.Lockout, DefaultLockout)
	wait := orDefault(cfg.QueueWait, DefaultQueueWait)
	o := &Overload{
		tenant:     newKeyedLimiter(cfg.TenantRate, cfg.TenantBurst, now).withPolicy(policyTenant),
		client:     newKeyedLimiter(cfg.ClientRate, cfg.ClientBurst, now).withPolicy(policyClientIP),
		failAddr:   newFailureLimiter(cfg.MaxFailures, lockout, now),
		failClient: newFailureLimiter(cfg.MaxFailures, lockout, now),
		trusted:    newTrustSet(now),
		admit: newFairShare(bound(cfg.MaxInFlight, DefaultMaxInFlight), bound(cfg.SoftInFlight, DefaultSoftInFlight),
			orDefault(cfg.AdmissionTarget, DefaultAdmissionTarget),
			orDefault(cfg.AdmissionInterval, DefaultAdmissionInterval), now),
		creates: newGate(cfg.MaxAccountCreates, DefaultMaxAccountCreates, wait),
		logins:  newGate(cfg.MaxLogins, DefaultMaxLogins, wait),
		logger:  logger,
	}
	o.failAddrPolicy = o.failAddr.policy(policyFailuresAddr)
	o.failClientPolicy = o.failClient.policy(policyFailuresClient)
	if cfg.MaxBacklog >= 0 {
		o.backlog = &backlog{js: cfg.JS, shards: cfg.Shards, max: cfg.MaxBacklog, every: cfg.BacklogInterval, now: now, logger: logger}
		if o.backlog.max == 0 {
			o.backlog.max = DefaultMaxBacklog
		}
		if o.backlog.every <= 0 {
			o.backlog.every = DefaultBacklogInterval
		}
	}
	var err error
	o.rateLimited, err = ops.Register(cfg.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_ingress_rate_limited_total",
		Help: "Requests refused with 429, by limit (fair_share, tenant, client_ip, failures_address, failures_client_id).",
	}, []string{"limit"}))
	if err != nil {
		return nil, err
	}
	o.shed, err = ops.Register(cfg.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_ingress_shed_total",
		Help: "Requests refused with 503 to shed load, by reason (in_flight, backlog, account_creates, logins, nats_handlers).",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	o.queueWait, err = ops.Register(cfg.Metrics, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tms_ingress_queue_wait_seconds",
		Help:    "Time create_account and login waited for a place, by route (account_creates, logins), shed or not.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
	}, []string{"route"}))
	if err != nil {
		return nil, err
	}
	// Every child exists from the start, at zero, so that a dashboard or
	// an alert sees "none yet" rather than no series.
	for _, l := range []string{limitTenant, limitFairShare, limitClientIP, limitFailuresAddr, limitFailuresClient} {
		o.rateLimited.WithLabelValues(l)
	}
	for _, r := range []string{shedInFlight, shedBacklog, shedAccountCreates, shedLogins, shedNATSHandlers} {
		o.shed.WithLabelValues(r)
	}
	for _, r := range []string{shedAccountCreates, shedLogins} {
		o.queueWait.WithLabelValues(r)
	}
	return o, nil
}

// orDefault is d, or def when d is 0; a negative d stands for "none" (0).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return def
	}
	return d
}

// bound is n, or def when n is 0; a negative n stands for "no bound" (0).
func bound(n, def int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return def
	}
	return n
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

// limitTenantState takes one request from tenant's bucket: the bucket's
// state, for the RateLimit fields of an answer allowed, or a 429 (with
// the tenant policy's fields).
func (o *Overload) limitTenantState(tenant string) (limitState, error) {
	st := o.tenant.take(tenant)
	if st.ok {
		return st, nil
	}
	o.rateLimited.WithLabelValues(limitTenant).Inc()
	return st, errRateLimitedBy(o.tenant.policyOf(), st, "this tenant is over its request rate")
}

// EnterAdmission takes an admission place for tenant (fairshare.go);
// release gives it back. It is admission.Gate's.
func (o *Overload) EnterAdmission(tenant string) (release func(), err error) {
	done, why := o.admit.enter(tenant)
	switch why {
	case shedMax:
		o.shed.WithLabelValues(shedInFlight).Inc()
		return nil, errOverloaded(overloadRetryAfter)
	case shedShare:
		return nil, o.overShare()
	}
	return done, nil
}

// overShare counts and returns the 429 of a tenant over its fair share.
// Its RateLimit fields name the fair_share policy with the share the
// tenant is held to now: the share moves with the load, so the policy
// is computed here, on the refusal only (an admission allowed carries
// no fair_share member: no quota applies to it then).
func (o *Overload) overShare() error {
	o.rateLimited.WithLabelValues(limitFairShare).Inc()
	p := newRateLimitPolicy(policyFairShare, o.admit.sharePerSecond(), time.Second)
	return errRateLimitedBy(p, limitState{wait: time.Second, next: time.Second},
		"the service is saturated and this tenant is over its fair share of it")
}

// checkShareNATS is the NATS API's check before a request takes a
// handler: a request whose subject names a tenant over its fair share is
// refused at once (nil: go on), so that the tenant being shed does not
// also hold the handlers the others need.
func (o *Overload) checkShareNATS(subject string) error {
	tenant, _, err := subjects.ParseAPI(subject)
	if err != nil || !o.admit.over(tenant) {
		return nil
	}
	return o.overShare()
}

// EnterNewAdmission is the gate of a request that may reserve a new slot
// (create_ticket, validate_eta): the backlog bound, then an admission
// place. It is admission.Gate's.
func (o *Overload) EnterNewAdmission(ctx context.Context, tenant string) (release func(), err error) {
	if err := o.checkBacklog(ctx); err != nil {
		return nil, err
	}
	return o.EnterAdmission(tenant)
}

// checkBacklog refuses a new admission while the allocators are too far
// behind.
func (o *Overload) checkBacklog(ctx context.Context) error {
	if o.backlog == nil || !o.backlog.saturated(ctx) {
		return nil
	}
	o.shed.WithLabelValues(shedBacklog).Inc()
	return errOverloaded(backlogRetryAfter)
}

// Published counts a slot record the responders wrote for this process,
// until the next sample. It is admission.Gate's.
func (o *Overload) Published() {
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
// pays one token per request, and an answer allowed says how many are
// left (RateLimit fields; none when the limit is off).
func (a *api) limitTenantHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := a.overload.limitTenantState(sessionFrom(r.Context()).tenant.ID)
		if err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		addRateLimit(w.Header(), a.overload.tenant.policyOf(), st)
		next.ServeHTTP(w, r)
	})
}

// attempt is what limitUnauthenticated learns from the handler it wraps:
// the client_id the request claims (login) or opened (create_account).
type attempt struct {
	addr     string
	clientID string
}

type attemptKey struct{}

// claimClient is called by login with the client_id of a well-formed body,
// before the password is checked: nil, or the 429 of a client_id locked
// out for this address.
func (a *api) claimClient(r *http.Request, clientID string) error {
	at, ok := r.Context().Value(attemptKey{}).(*attempt)
	if !ok {
		return nil // not behind limitUnauthenticated (a test's bare handler)
	}
	at.clientID = clientID
	if a.overload.trusted.has(clientID, at.addr) {
		return nil
	}
	if st := a.overload.failClient.checkState(clientID); !st.ok {
		a.overload.rateLimited.WithLabelValues(limitFailuresClient).Inc()
		return errRateLimitedBy(a.overload.failClientPolicy, st, "too many failed attempts for this client_id")
	}
	return nil
}

// openedClient is called by create_account with the new tenant's id: its
// address is trusted for it.
func openedClient(r *http.Request, clientID string) {
	if at, ok := r.Context().Value(attemptKey{}).(*attempt); ok {
		at.clientID = clientID
	}
}

// limitUnauthenticated is middleware for create_account and login: an
// address locked out by its failures is refused; create_account takes a
// token of the address's bucket; then the request waits for a place of g.
// Its outcome is counted: a failure against the address and the claimed
// client_id, a success trusts the address for the client_id.
func (a *api) limitUnauthenticated(g *gate, reason string) func(http.Handler) http.Handler {
	perAddress := reason == shedAccountCreates
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o := a.overload
			addr := clientAddr(r)
			// The RateLimit fields of an attempt allowed list the failures
			// policy of its address and, for create_account, the client_ip
			// bucket; a refusal names the policy that refused.
			st := o.failAddr.checkState(addr)
			if !st.ok {
				o.rateLimited.WithLabelValues(limitFailuresAddr).Inc()
				writeError(w, r, a.logger, errRateLimitedBy(o.failAddrPolicy, st, "too many failed attempts from this address"))
				return
			}
			addRateLimit(w.Header(), o.failAddrPolicy, st)
			if perAddress {
				st := o.client.take(addr)
				if !st.ok {
					o.rateLimited.WithLabelValues(limitClientIP).Inc()
					writeError(w, r, a.logger, errRateLimitedBy(o.client.policyOf(), st, "too many accounts opened from this address"))
					return
				}
				addRateLimit(w.Header(), o.client.policyOf(), st)
			}
			start := time.Now()
			release, err := g.enter(r.Context())
			o.queueWait.WithLabelValues(reason).Observe(time.Since(start).Seconds())
			if err != nil {
				if errors.Is(err, errGateFull) {
					o.shed.WithLabelValues(reason).Inc()
				}
				// Or the client went away while it waited: the answer
				// goes nowhere, but the log and metrics say what it was.
				writeError(w, r, a.logger, errOverloaded(overloadRetryAfter))
				return
			}
			defer release()
			at := &attempt{addr: addr}
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), attemptKey{}, at)))
			o.outcome(at, ww.Status())
		})
	}
}

// outcome counts the answer status of an attempt: a 4xx is the client's
// failure, but a 429 (already refused) and a 409 (create_account's e-mail
// taken: a provisioning script run a second time gets one per account it
// made before, and must not lock its own address out); a 2xx trusts its
// address for its client_id; a 5xx is the service's fault and counts for
// nothing.
func (o *Overload) outcome(at *attempt, status int) {
	switch {
	case status >= 200 && status < 300:
		if at.clientID != "" {
			o.trusted.add(at.clientID, at.addr)
		}
	case status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusConflict:
		o.failAddr.fail(at.addr)
		if at.clientID != "" {
			o.failClient.fail(at.clientID)
		}
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
