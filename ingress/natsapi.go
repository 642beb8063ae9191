package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/admission"
	"tms/ops"
	"tms/subjects"
	"tms/tenants"
)

// defaultNATSConcurrency is Config.NATSConcurrency's default.
const defaultNATSConcurrency = 64

// natsRequestTimeout bounds the handling of one NATS API request, well
// beyond the sum of the calls it makes, so a stuck dependency cannot hold
// a handler slot for ever.
const natsRequestTimeout = 20 * time.Second

// NATSAPI serves the public NATS API: request-reply on
// subjects.API(tenant, op) for services that publish directly, with the
// same JSON bodies and answers as HTTP plus the HTTP status as "code".
// See doc.go for who may publish there.
type NATSAPI struct {
	nc          *nats.Conn
	tickets     ticketAPI
	logger      *slog.Logger
	overload    *Overload
	concurrency int
	metrics     *natsMetrics
	admissions  *admissions
	agentReads  *agentReads // get_agent, get_agent_schedule
	sample      *sampler
	started     chan struct{} // closed once Run has subscribed
	startOnce   sync.Once
}

// NewNATSAPI returns the NATS API over cfg's Registry, NC and Admission;
// Run serves it.
func NewNATSAPI(cfg Config) (*NATSAPI, error) {
	a := &api{logger: cfg.Logger}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		return nil, errors.New("ingress: Config.Metrics is nil")
	}
	if cfg.NC == nil {
		return nil, errors.New("ingress: Config.NC is nil")
	}
	var err error
	if a.overload, err = overloadOf(cfg, a.logger); err != nil {
		return nil, err
	}
	if err := a.withTickets(cfg); err != nil {
		return nil, err
	}
	n := &NATSAPI{
		nc: cfg.NC, tickets: a.tickets, overload: a.overload,
		logger: a.logger.With(slog.String("listener", "nats")), concurrency: cfg.NATSConcurrency,
		sample: newSampler(sampleEvery, time.Now), started: make(chan struct{}), agentReads: newAgentReads(cfg),
	}
	if n.metrics, err = newNATSMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	if n.admissions, err = newAdmissions(cfg.Metrics); err != nil {
		return nil, err
	}
	if n.concurrency <= 0 {
		n.concurrency = defaultNATSConcurrency
	}
	return n, nil
}

// Started is closed once Run has subscribed: from then on requests are
// served, until Run's context is done.
func (n *NATSAPI) Started() <-chan struct{} { return n.started }

// Run subscribes to subjects.APIAll in the queue group subjects.QueueAPI,
// so that every ingress process shares the requests, and serves at most
// the configured number at once: a request that finds every handler busy
// is answered 503 overloaded at once rather than left to wait in the
// subscription's buffer, where its caller would only see a timeout. When
// ctx is done it unsubscribes, lets the requests in hand finish and
// returns nil.
func (n *NATSAPI) Run(ctx context.Context) error {
	var (
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, n.concurrency)
	// In-flight requests finish after ctx is done, each within its deadline.
	hctx := context.WithoutCancel(ctx)
	sub, err := n.nc.QueueSubscribe(subjects.APIAll, subjects.QueueAPI, func(m *nats.Msg) {
		start := time.Now()
		if err := n.overload.checkShareNATS(m.Subject); err != nil {
			n.refuse(ctx, m, start, err)
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			n.refuse(ctx, m, start, n.overload.shedNATS())
			return
		}
		mu.Lock()
		if stopped {
			mu.Unlock()
			<-slots
			return
		}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			n.serve(hctx, m, start)
		}()
	})
	if err != nil {
		return fmt.Errorf("nats api: subscribing to %s: %w", subjects.APIAll, err)
	}
	if err := n.nc.FlushTimeout(callTimeout); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("nats api: subscribing to %s: %w", subjects.APIAll, err)
	}
	n.startOnce.Do(func() { close(n.started) })
	n.logger.Info("nats api serving", slog.String("subject", subjects.APIAll), slog.String("queue", subjects.QueueAPI))

	<-ctx.Done()
	uerr := sub.Unsubscribe()
	mu.Lock()
	stopped = true
	mu.Unlock()
	wg.Wait()
	if uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) && !errors.Is(uerr, nats.ErrBadSubscription) {
		n.logger.Warn("nats api: unsubscribing", slog.Any("err", uerr))
	}
	n.logger.Info("nats api stopped")
	return nil
}

// serve answers one request; start is when it arrived.
func (n *NATSAPI) serve(ctx context.Context, m *nats.Msg, start time.Time) {
	ctx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	note := &admissionNote{}
	ctx = withAdmissionNote(ctx, note)
	var extra replyExtras
	if len(m.Header.Values(idempotencyHeader)) > 0 {
		// Called by admission on this goroutine, before dispatch returns.
		ctx = admission.OnReplay(ctx, func() { extra.replayed = true })
	}
	ans, err := n.dispatchLimited(ctx, m, &extra.limit)
	n.finish(ctx, m, start, note, ans, err, &extra)
}

// replyExtras is what a reply's headers say beside the answer: the state
// of the tenant limit the request passed (its RateLimit fields, as on
// HTTP; the zero value: it did not get that far) and whether the answer
// is a create_ticket replayed from its Idempotency-Key (the
// Idempotent-Replayed header).
type replyExtras struct {
	limit    limitState
	replayed bool
}

// refuse answers a request refused before it took a handler (the fair
// share, every handler busy).
func (n *NATSAPI) refuse(ctx context.Context, m *nats.Msg, start time.Time, err error) {
	n.finish(ctx, m, start, &admissionNote{}, answer{}, err, nil)
}

// finish sends the answer to a request (ans, or err's answer: see
// toAPIError; the headers an HTTP answer would carry, Retry-After, go in
// NATS headers), counts it and logs it as the HTTP access log does:
// metrics before the reply, so a caller that has its answer sees it
// counted. extra (nil for a request refused before it took a handler)
// adds the headers of replyExtras.
func (n *NATSAPI) finish(ctx context.Context, m *nats.Msg, start time.Time, note *admissionNote, ans answer, err error, extra *replyExtras) {
	out := &nats.Msg{}
	if p := n.overload.tenant.policyOf(); p != nil && extra != nil && extra.limit.ok {
		// NATS headers are case-sensitive: the fields' own spelling.
		out.Header = nats.Header{rateLimitPolicyField: p.values, rateLimitField: {rateLimitMember(p, extra.limit)}}
	}
	status, code := ans.status, ""
	if err != nil {
		ae := toAPIError(err)
		status, code = ae.status, ae.code
		out.Data = natsReply(ae.status, ae.body())
		if len(ae.header) > 0 {
			if out.Header == nil {
				out.Header = nats.Header{}
			}
			// A refusal's fields replace the tenant policy's: a 429 names
			// the policy that refused.
			for k, v := range ae.header {
				out.Header.Set(k, v)
			}
		}
	} else {
		out.Data = natsReply(ans.status, ans.body)
		if extra != nil && extra.replayed {
			if out.Header == nil {
				out.Header = nats.Header{}
			}
			out.Header.Set(replayedHeader, "true")
		}
	}
	tenantID, name, perr := subjects.ParseAPI(m.Subject)
	op := natsOpLabel(name)
	if perr != nil {
		op = natsOpUnknown
	}
	elapsed := time.Since(start)
	n.metrics.requests.WithLabelValues(op, strconv.Itoa(status)).Inc()
	n.metrics.duration.WithLabelValues(op).Observe(elapsed.Seconds())
	if op == subjects.OpCreateTicket {
		typ := note.typ
		if !note.typed {
			typ = peekTicketType(m.Data)
		}
		note.code = code // writeError notes it on HTTP
		n.admissions.decided(note, typ, status)
	}
	n.send(m, out)
	n.log(ctx, op, tenantID, perr == nil, status, code, elapsed, len(out.Data), err)
}

// log writes a request's line. Like the HTTP access log: refusals of the
// overload limits (429, 503 overloaded) at debug, since they are counted
// and a line each would add to the load; any other 5xx at error, with its
// cause; a hot operation's other answers at debug but for one info line a
// second per operation (sampled, with how many it stands for); the rest at
// info.
func (n *NATSAPI) log(ctx context.Context, op, tenantID string, tenantOK bool, status int, code string,
	elapsed time.Duration, bytes int, err error) {
	level := slog.LevelInfo
	switch {
	case status == http.StatusTooManyRequests || code == codeOverloaded:
		level = slog.LevelDebug
	case status >= 500:
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("op", op),
		slog.Int("status", status),
		slog.Duration("duration", elapsed),
		slog.Int("bytes", bytes),
	}
	if tenantOK {
		attrs = append(attrs, slog.String("tenant", tenantID))
	}
	if code != "" {
		attrs = append(attrs, slog.String("code", code))
	}
	if err != nil && status >= 500 {
		attrs = append(attrs, slog.Any("err", err))
	}
	if level == slog.LevelInfo && natsHotOps[op] {
		if ok, held := n.sample.admit(op); ok {
			attrs = append(attrs, slog.Bool("sampled", true), slog.Int("unlogged_since", held))
		} else {
			level = slog.LevelDebug
		}
	}
	n.logger.LogAttrs(ctx, level, "nats request", attrs...)
}

// natsHotOps are the admission path's operations, logged like the HTTP
// hotRoutes.
var natsHotOps = map[string]bool{
	subjects.OpCreateTicket: true, subjects.OpCancelTicket: true, subjects.OpGetTicket: true,
	subjects.OpValidateETA: true, subjects.OpAllocateSlot: true, subjects.OpGetCapacity: true,
}

// natsOpUnknown is the op label of a subject that names no operation.
const natsOpUnknown = "unknown"

// natsOpLabel keeps the op label bounded: a known operation's name, or
// "unknown".
func natsOpLabel(name string) string {
	if natsOpNamed(name) != nil {
		return name
	}
	return natsOpUnknown
}

// natsMetrics are tms_nats_api_requests_total{op,status} and
// tms_nats_api_request_duration_seconds{op}, the NATS API's counterparts
// of the HTTP request metrics.
type natsMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newNATSMetrics(reg prometheus.Registerer) (*natsMetrics, error) {
	requests, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_nats_api_requests_total",
		Help: "NATS API requests answered, by operation (or unknown) and the HTTP status of the answer.",
	}, []string{"op", "status"}))
	if err != nil {
		return nil, err
	}
	duration, err := ops.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tms_nats_api_request_duration_seconds",
		Help:    "Time to answer a NATS API request, from its arrival, by operation (or unknown).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op"}))
	if err != nil {
		return nil, err
	}
	// The series an error-rate alert watches exist from the start, at zero.
	for _, op := range append(natsOpNames(), natsOpUnknown) {
		duration.WithLabelValues(op)
		for _, status := range []string{"500", "503"} {
			requests.WithLabelValues(op, status)
		}
	}
	return &natsMetrics{requests: requests, duration: duration}, nil
}

// natsOpNames is every operation's name, in natsOps' order.
func natsOpNames() []string {
	names := make([]string, len(natsOps))
	for i := range natsOps {
		names[i] = natsOps[i].name
	}
	return names
}

// send publishes out to m's reply subject.
func (n *NATSAPI) send(m *nats.Msg, out *nats.Msg) {
	if m.Reply == "" {
		return // a publish without a reply subject gets no answer
	}
	out.Subject = m.Reply
	if err := n.nc.PublishMsg(out); err != nil {
		n.logger.Warn("nats api: replying", slog.String("subject", m.Subject), slog.Any("err", err))
	}
}

// natsReply is the HTTP answer's JSON object with the HTTP status added
// as "code": the body is encoded once and the member appended before its
// closing brace.
func natsReply(status int, body any) []byte {
	raw, err := json.Marshal(body)
	if err != nil || len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' {
		// Only our own answer types reach here, each a JSON object.
		return fmt.Appendf(nil, `{"status":"error","error":%q,"message":%q,"code":500}`, codeInternal, msgInternal)
	}
	out := raw[:len(raw)-1]
	if len(raw) > 2 {
		out = append(out, ',')
	}
	return fmt.Appendf(out, `"code":%d}`, status)
}

// natsOp is one operation of the NATS API: its name (the subject's last
// token) and how a request for the subject's tenant is answered.
type natsOp struct {
	name  string
	serve func(ctx context.Context, n *NATSAPI, t tenants.Tenant, m *nats.Msg) (answer, error)
}

// natsOps is every operation, in the order the 404 for an unknown one
// lists them.
var natsOps = []natsOp{
	{subjects.OpCreateTicket, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req createTicketRequest, m *nats.Msg) (answer, error) {
		var values []string
		if m.Header != nil {
			values = m.Header.Values(idempotencyHeader)
		}
		noteTicketType(ctx, req.TicketType)
		key, err := idempotencyKeyOf(values)
		if err != nil {
			return answer{}, err
		}
		return n.tickets.create(ctx, t, req, key)
	})},
	{subjects.OpCancelTicket, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req ticketIDRequest, _ *nats.Msg) (answer, error) {
		return n.tickets.cancel(ctx, t, req)
	})},
	{subjects.OpGetTicket, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req ticketIDRequest, _ *nats.Msg) (answer, error) {
		return n.tickets.get(ctx, t, req)
	})},
	{subjects.OpGetCapacity, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, _ tenantReadRequest, _ *nats.Msg) (answer, error) {
		return n.tickets.capacity(ctx, t)
	})},
	{subjects.OpGetAtRisk, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, _ tenantReadRequest, _ *nats.Msg) (answer, error) {
		return n.tickets.atRisk(ctx, t)
	})},
	{subjects.OpValidateETA, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req validateETARequest, _ *nats.Msg) (answer, error) {
		return n.tickets.validateETA(ctx, t, req)
	})},
	{subjects.OpAllocateSlot, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req allocateSlotRequest, _ *nats.Msg) (answer, error) {
		return n.tickets.allocateSlot(ctx, t, req)
	})},
	{subjects.OpGetAgent, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req agentRequest, _ *nats.Msg) (answer, error) {
		return n.agentReads.get(ctx, t, req.AgentID)
	})},
	{subjects.OpGetAgentSchedule, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req agentScheduleRequest, _ *nats.Msg) (answer, error) {
		if subjects.ValidID(req.AgentID) != nil {
			return answer{}, errInvalidAgentID()
		}
		hours, err := checkHours(req.Hours)
		if err != nil {
			return answer{}, err
		}
		return n.agentReads.schedule(ctx, t, req.AgentID, hours)
	})},
	{subjects.OpListTickets, natsCall(func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req listTicketsRequest, _ *nats.Msg) (answer, error) {
		p, err := req.params(t.ID)
		if err != nil {
			return answer{}, err
		}
		return n.agentReads.list(ctx, t, p)
	})},
}

// natsCall makes an operation of a call on request type R: the body is
// decoded exactly as the HTTP handlers decode it, and refused if it names
// another tenant than the subject's (checkOwner, as on HTTP against the
// session's).
func natsCall[R any](call func(ctx context.Context, n *NATSAPI, t tenants.Tenant, req R, m *nats.Msg) (answer, error)) func(context.Context, *NATSAPI, tenants.Tenant, *nats.Msg) (answer, error) {
	return func(ctx context.Context, n *NATSAPI, t tenants.Tenant, m *nats.Msg) (answer, error) {
		var req R
		if err := decodeObject(m.Data, &req); err != nil {
			return answer{}, err
		}
		if err := checkOwner(&req, t.ID, errSubjectTenant); err != nil {
			return answer{}, err
		}
		return call(ctx, n, t, req, m)
	}
}

// errSubjectTenant refuses a body that names another tenant than its
// subject: the subject is what NATS permissions guard.
var errSubjectTenant = newError(http.StatusForbidden, codeForbidden, "client_id: subject tenant and body disagree")

// dispatch answers one request: the subject's tenant is resolved once,
// here, and the operation's table entry does the rest.
func (n *NATSAPI) dispatch(ctx context.Context, m *nats.Msg) (answer, error) {
	var limit limitState
	return n.dispatchLimited(ctx, m, &limit)
}

// dispatchLimited is dispatch, setting *limit to the state of the tenant
// limit once the request has passed it.
func (n *NATSAPI) dispatchLimited(ctx context.Context, m *nats.Msg, limit *limitState) (answer, error) {
	tenantID, name, err := subjects.ParseAPI(m.Subject)
	if err != nil {
		return answer{}, errClientNotFound // the tenant token is no id at all
	}
	op := natsOpNamed(name)
	if op == nil {
		return answer{}, newError(http.StatusNotFound, codeNotFound, "no operation %s (known: %s)", quote(name), strings.Join(natsOpNames(), ", "))
	}
	if len(m.Data) > maxBodyBytes {
		return answer{}, newError(http.StatusRequestEntityTooLarge, codeBodyTooLarge,
			"request body is larger than %d bytes", maxBodyBytes)
	}
	// The subject's tenant, resolved once as every transport does.
	t, err := n.tickets.client(ctx, tenantID)
	if err != nil {
		return answer{}, err
	}
	noteTenant(ctx, t.ID)
	st, err := n.overload.limitTenantState(t.ID)
	if err != nil {
		return answer{}, err
	}
	*limit = st
	return op.serve(ctx, n, t, m)
}

// natsOpNamed is the operation called name, or nil.
func natsOpNamed(name string) *natsOp {
	for i := range natsOps {
		if natsOps[i].name == name {
			return &natsOps[i]
		}
	}
	return nil
}
