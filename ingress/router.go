package ingress

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tms/ingress/admission"
	"tms/ingress/openapi"
	"tms/subjects"
	"tms/tenants"
)

// Config holds what the routers and the NATS API need. Sessions and
// Agents are required by the public router only; Registry and Admission
// by both routers and the NATS API, NC by the NATS API.
type Config struct {
	Registry *tenants.Registry
	Sessions *tenants.Sessions
	// Agents serves the agent routes. Give the admission service the same
	// one, so a tenant's next ticket sees the agent it just wrote.
	Agents *tenants.Agents
	// Admission is ticket admission: build one per process with
	// admission.New, gated by Overload, and give the same one to both
	// routers and the NATS API.
	Admission *admission.Service
	// NC carries the NATS API's requests and replies; JS is where the
	// overload bounds watch the TICKETS backlog.
	NC *nats.Conn
	JS jetstream.JetStream
	// NATSConcurrency is how many NATS API requests one process handles
	// at once (0: 64); more wait in the subscription's buffer.
	NATSConcurrency int
	Logger          *slog.Logger // nil: discard
	// Metrics receives request counts and latency histograms per listener,
	// route pattern, method and code; Gatherer is served at GET /metrics.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
	// Ready reports whether the process can serve (NATS and the tenant
	// registry usable): nil means ready. /readyz answers 503 otherwise,
	// except for an error with a Degraded() bool method saying true
	// (ops.DegradedError: Postgres unreachable), which is 200 "degraded".
	Ready func(ctx context.Context) error
	// Overload holds the rate limits and load-shedding bounds (overload.go).
	// Build one per process with NewOverload and give it to every router,
	// the NATS API and the admission service (its Gate), so its bounds are
	// the process's. nil: each router and NATS API makes its own with the
	// defaults and no rate limits.
	Overload *Overload
}

// callTimeout bounds every call an ordinary request makes to NATS or
// Postgres (the timing budget's Call, which the idempotency claim adds
// up); create_account, which creates a database, gets createTimeout.
// Both stay under the server's WriteTimeout so the answer still gets out.
var callTimeout = subjects.DefaultBudget.Call

const createTimeout = 12 * time.Second

// readyTimeout bounds one readiness check, well inside a probe's timeout.
const readyTimeout = 2 * time.Second

// api is the state the handlers share.
type api struct {
	registry *tenants.Registry
	sessions *tenants.Sessions
	agents   *tenants.Agents
	logger   *slog.Logger
	gatherer prometheus.Gatherer
	ready    func(ctx context.Context) error
	tickets  ticketAPI
	overload *Overload
}

func newAPI(cfg Config) (*api, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("ingress: Config.Metrics is nil")
	}
	if cfg.Ready == nil {
		return nil, errors.New("ingress: Config.Ready is nil")
	}
	a := &api{
		registry: cfg.Registry, sessions: cfg.Sessions, agents: cfg.Agents,
		logger: cfg.Logger, gatherer: cfg.Gatherer, ready: cfg.Ready,
	}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	var err error
	if a.overload, err = overloadOf(cfg, a.logger); err != nil {
		return nil, err
	}
	return a, nil
}

// withTickets adds the ticket API over cfg's admission service.
func (a *api) withTickets(cfg Config) error {
	switch {
	case cfg.Registry == nil:
		return errors.New("ingress: Config.Registry is nil")
	case cfg.Admission == nil:
		return errors.New("ingress: Config.Admission is nil")
	}
	a.tickets = ticketAPI{svc: cfg.Admission, registry: cfg.Registry}
	return nil
}

// newRouter returns a chi router with the middleware every listener
// shares and JSON answers for unknown paths and wrong methods.
func newRouter(listener string, a *api, reg prometheus.Registerer) (*chi.Mux, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	logger := a.logger.With(slog.String("listener", listener))
	r := chi.NewRouter()
	r.Use(observe(listener, logger, m), recoverer(logger))
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, req, logger, newError(http.StatusNotFound, codeNotFound, "no route for %s", quote(req.URL.Path)))
	})
	r.MethodNotAllowed(methodNotAllowed(r, logger))
	r.Get("/healthz", a.healthz)
	r.Get("/readyz", a.readyz)
	doc, err := openapi.Handler(listener)
	if err != nil {
		return nil, err
	}
	r.Method(http.MethodGet, "/openapi.json", doc)
	return r, nil
}

// methodNotAllowed answers 405 with the Allow header chi leaves to custom
// handlers, found by asking the router which methods match the path.
func methodNotAllowed(mux *chi.Mux, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range knownMethods {
			if mux.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) == 0 {
			// chi also lands here for a method it does not know at all,
			// on any path; a path nobody serves is still a 404.
			writeError(w, r, logger, newError(http.StatusNotFound, codeNotFound, "no route for %s", quote(r.URL.Path)))
			return
		}
		for _, m := range allowed {
			w.Header().Add("Allow", m)
		}
		writeError(w, r, logger, newError(http.StatusMethodNotAllowed, codeMethodNotAllowed,
			"%s is not allowed on %s", quote(r.Method), quote(r.URL.Path)))
	}
}

// NewOps returns the handler of a worker's operations listener (tms
// worker --ops-addr): /healthz, /readyz and /metrics, as the public
// listener answers them, and nothing else. Only cfg's Logger, Metrics,
// Gatherer and Ready are read.
func NewOps(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Metrics == nil:
		return nil, errors.New("ingress: Config.Metrics is nil")
	case cfg.Gatherer == nil:
		return nil, errors.New("ingress: Config.Gatherer is nil")
	case cfg.Ready == nil:
		return nil, errors.New("ingress: Config.Ready is nil")
	}
	a := &api{logger: cfg.Logger, gatherer: cfg.Gatherer, ready: cfg.Ready}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	r, err := newRouter("ops", a, cfg.Metrics)
	if err != nil {
		return nil, err
	}
	r.Method(http.MethodGet, "/metrics", a.metricsHandler())
	return r, nil
}

// metricsHandler serves the process's metrics (GET /metrics).
func (a *api) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(a.logger.Handler(), slog.LevelError),
		Timeout:  callTimeout,
	})
}

// NewPublic returns the handler of the public listener: accounts,
// sessions, agents, health, readiness and metrics.
func NewPublic(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("ingress: Config.Registry is nil")
	case cfg.Sessions == nil:
		return nil, errors.New("ingress: Config.Sessions is nil")
	case cfg.Agents == nil:
		return nil, errors.New("ingress: Config.Agents is nil")
	case cfg.Gatherer == nil:
		return nil, errors.New("ingress: Config.Gatherer is nil")
	}
	a, err := newAPI(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.withTickets(cfg); err != nil {
		return nil, err
	}
	ad, err := newAdmissions(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	r, err := newRouter("public", a, cfg.Metrics)
	if err != nil {
		return nil, err
	}
	r.Method(http.MethodGet, "/metrics", a.metricsHandler())
	// create_ticket is counted outside authentication and the tenant rate
	// limit: their refusals are admission decisions too.
	r.With(countAdmissions(ad), a.authenticate, noteSessionTenant, a.limitTenantHTTP).Post("/create_ticket", a.createTicketHTTP)
	r.With(a.limitUnauthenticated(a.overload.creates, shedAccountCreates)).Post("/create_account", a.createAccount)
	r.With(a.limitUnauthenticated(a.overload.logins, shedLogins)).Post("/login", a.login)
	// The status page's own files hold no tenant data (status.go).
	r.Get("/status", a.statusPageHTTP)
	r.Get("/status/{file}", a.statusAssetHTTP)
	r.Group(func(r chi.Router) {
		r.Use(a.authenticate, a.limitTenantHTTP)
		r.Post("/logout", a.logout)
		r.Post("/agents", a.createAgent)
		r.Get("/agents", a.listAgents)
		r.Patch("/agents/{agent_id}", a.setAgentStatus)
		reads := newAgentReads(cfg)
		r.Get("/agents/{agent_id}", a.getAgentHTTP(reads))
		r.Get("/agents/{agent_id}/schedule", a.getAgentScheduleHTTP(reads))
		r.Post("/cancel_ticket", a.cancelTicketHTTP)
		// A static segment wins over {ticket_id} in chi, whatever the
		// order: "at-risk" is never looked up as a ticket id.
		r.Get("/tickets/at-risk", a.atRiskHTTP)
		r.Get("/tickets", a.listTicketsHTTP(reads))
		r.Get("/tickets/{ticket_id}", a.getTicketHTTP)
		r.Get("/capacity", a.capacityHTTP)
		r.Get("/calendar", a.calendarHTTP(reads))
		r.Get("/admissions/recent", a.recentAdmissionsHTTP(ad.recent))
	})
	return r, nil
}

// NewInternal returns the handler of the internal listener ("within
// VPN"): health, readiness and the two-phase form of ticket admission,
// validate_eta and allocate_slot. It has no bearer authentication: the
// network boundary is its access control.
func NewInternal(cfg Config) (http.Handler, error) {
	a, err := newAPI(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.withTickets(cfg); err != nil {
		return nil, err
	}
	r, err := newRouter("internal", a, cfg.Metrics)
	if err != nil {
		return nil, err
	}
	r.Post("/validate_eta", a.validateETAHTTP)
	r.Post("/allocate_slot", a.allocateSlotHTTP)
	return r, nil
}
