package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

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
		started: make(chan struct{}),
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
		if err := n.overload.checkShareNATS(m.Subject); err != nil {
			n.reply(ctx, m, err)
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			n.reply(ctx, m, n.overload.shedNATS())
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
			n.serve(hctx, m)
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

// serve answers one request.
func (n *NATSAPI) serve(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, natsRequestTimeout)
	defer cancel()
	ans, err := n.dispatch(ctx, m)
	if err != nil {
		n.reply(ctx, m, err)
		return
	}
	n.logger.LogAttrs(ctx, slog.LevelDebug, "nats request", slog.String("subject", m.Subject), slog.Int("status", ans.status))
	n.send(m, &nats.Msg{Data: natsReply(ans.status, ans.body)})
}

// reply answers a request with err's answer (see toAPIError); the
// headers an HTTP answer would carry (Retry-After) go in NATS headers.
func (n *NATSAPI) reply(ctx context.Context, m *nats.Msg, err error) {
	ae := toAPIError(err)
	level := slog.LevelDebug
	if ae.status >= 500 && ae.code != codeOverloaded {
		// Shedding is counted in the metrics; a log line per shed request
		// would add to the load it sheds.
		level = slog.LevelError
	}
	n.logger.LogAttrs(ctx, level, "nats request failed", slog.String("subject", m.Subject),
		slog.Int("status", ae.status), slog.String("code", ae.code), slog.Any("err", err))
	out := &nats.Msg{Data: natsReply(ae.status, ae.body())}
	if len(ae.header) > 0 {
		out.Header = nats.Header{}
		for k, v := range ae.header {
			out.Header.Set(k, v)
		}
	}
	n.send(m, out)
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
	tenantID, name, err := subjects.ParseAPI(m.Subject)
	if err != nil {
		return answer{}, errClientNotFound // the tenant token is no id at all
	}
	op := natsOpNamed(name)
	if op == nil {
		names := make([]string, len(natsOps))
		for i := range natsOps {
			names[i] = natsOps[i].name
		}
		return answer{}, newError(http.StatusNotFound, codeNotFound, "no operation %s (known: %s)", quote(name), strings.Join(names, ", "))
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
	if err := n.overload.limitTenant(t.ID); err != nil {
		return answer{}, err
	}
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
