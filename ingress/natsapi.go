package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
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
	registry    *tenants.Registry
	tickets     ticketAPI
	logger      *slog.Logger
	overload    *Overload
	concurrency int
	ready       atomic.Bool
}

// NewNATSAPI returns the NATS API over cfg's Registry, NC, JS and Tickets;
// Run serves it.
func NewNATSAPI(cfg Config) (*NATSAPI, error) {
	a := &api{logger: cfg.Logger}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		return nil, errors.New("ingress: Config.Metrics is nil")
	}
	var err error
	if a.overload, err = overloadOf(cfg, a.logger); err != nil {
		return nil, err
	}
	if err := a.withTickets(cfg); err != nil {
		return nil, err
	}
	n := &NATSAPI{
		nc: cfg.NC, registry: cfg.Registry, tickets: a.tickets, overload: a.overload,
		logger: a.logger.With(slog.String("listener", "nats")), concurrency: cfg.NATSConcurrency,
	}
	if n.concurrency <= 0 {
		n.concurrency = defaultNATSConcurrency
	}
	return n, nil
}

// Ready reports whether Run has subscribed.
func (n *NATSAPI) Ready() bool { return n.ready.Load() }

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
	n.ready.Store(true)
	n.logger.Info("nats api serving", slog.String("subject", subjects.APIAll), slog.String("queue", subjects.QueueAPI))

	<-ctx.Done()
	n.ready.Store(false)
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
// as "code".
func natsReply(status int, body any) []byte {
	fallback := fmt.Appendf(nil, `{"status":"error","error":%q,"message":%q,"code":500}`, codeInternal, msgInternal)
	raw, err := json.Marshal(body)
	if err != nil {
		return fallback
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fallback
	}
	obj["code"] = json.RawMessage(fmt.Appendf(nil, "%d", status))
	out, err := json.Marshal(obj)
	if err != nil {
		return fallback
	}
	return out
}

var natsOps = []string{subjects.OpCreateTicket, subjects.OpCancelTicket, subjects.OpGetTicket,
	subjects.OpValidateETA, subjects.OpAllocateSlot}

// errSubjectTenant refuses a body that names another tenant than its
// subject: the subject is what NATS permissions guard.
var errSubjectTenant = newError(http.StatusForbidden, codeForbidden, "client_id: subject tenant and body disagree")

// checkBodyClient checks a body's client_id against the subject's tenant.
func checkBodyClient(tenant, clientID string) error {
	if subjects.ValidID(clientID) != nil {
		return errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
	}
	if clientID != tenant {
		return errSubjectTenant
	}
	return nil
}

// dispatch decodes one request exactly as the HTTP handlers do and calls
// the ticket service.
func (n *NATSAPI) dispatch(ctx context.Context, m *nats.Msg) (answer, error) {
	tenantID, op, err := subjects.ParseAPI(m.Subject)
	if err != nil {
		return answer{}, errClientNotFound // the tenant token is no id at all
	}
	known := false
	for _, o := range natsOps {
		known = known || o == op
	}
	if !known {
		return answer{}, newError(http.StatusNotFound, codeNotFound, "no operation %s (known: create_ticket, cancel_ticket, get_ticket, validate_eta, allocate_slot)", quote(op))
	}
	if len(m.Data) > maxBodyBytes {
		return answer{}, newError(http.StatusRequestEntityTooLarge, codeBodyTooLarge,
			"request body is larger than %d bytes", maxBodyBytes)
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	t, err := n.registry.Get(gctx, tenantID)
	cancel()
	if errors.Is(err, tenants.ErrTenantNotFound) {
		return answer{}, errClientNotFound
	}
	if err != nil {
		return answer{}, fmt.Errorf("loading tenant %s: %w", tenantID, err)
	}
	if err := n.overload.limitTenant(t.ID); err != nil {
		return answer{}, err
	}

	switch op {
	case subjects.OpCreateTicket:
		var req createTicketRequest
		if err := decodeObject(m.Data, &req); err != nil {
			return answer{}, err
		}
		if err := checkBodyClient(t.ID, req.ClientID); err != nil {
			return answer{}, err
		}
		var values []string
		if m.Header != nil {
			values = m.Header.Values(idempotencyHeader)
		}
		key, err := idempotencyKeyOf(values)
		if err != nil {
			return answer{}, err
		}
		return n.tickets.create(ctx, t, req, key)
	case subjects.OpCancelTicket, subjects.OpGetTicket:
		var req ticketIDRequest
		if err := decodeObject(m.Data, &req); err != nil {
			return answer{}, err
		}
		if op == subjects.OpCancelTicket {
			return n.tickets.cancel(ctx, t, req)
		}
		return n.tickets.get(ctx, t, req)
	case subjects.OpValidateETA:
		var req validateETARequest
		if err := decodeObject(m.Data, &req); err != nil {
			return answer{}, err
		}
		if err := checkBodyClient(t.ID, req.ClientID); err != nil {
			return answer{}, err
		}
		return n.tickets.validateETA(ctx, t, req)
	default: // subjects.OpAllocateSlot
		var req allocateSlotRequest
		if err := decodeObject(m.Data, &req); err != nil {
			return answer{}, err
		}
		if err := checkBodyClient(t.ID, req.ClientID); err != nil {
			return answer{}, err
		}
		return n.tickets.allocateSlot(ctx, t, req)
	}
}
