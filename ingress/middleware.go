package ingress

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/subjects"
	"tms/tenants"
)

// callTimeout bounds every call an ordinary request makes to NATS or
// Postgres; create_account, which creates a database, gets createTimeout.
// Both stay under the server's WriteTimeout so the answer still gets out.
const (
	callTimeout   = 5 * time.Second
	createTimeout = 12 * time.Second
)

// requestInfo travels in the request context from observe, the outermost
// middleware, to the handlers: authenticate fills in the tenant so that
// the access log line can name it.
type requestInfo struct {
	mu     sync.Mutex
	tenant string
}

type requestInfoKey struct{}

func setLogTenant(ctx context.Context, tenant string) {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		info.mu.Lock()
		info.tenant = tenant
		info.mu.Unlock()
	}
}

// metrics are the request counter and latency histogram, labelled by
// listener, method, route pattern and status code.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var metricLabels = []string{"listener", "method", "route", "code"}

// newMetrics registers the request metrics on reg. Both listeners (and a
// test building several routers) share one registry, so a collector that
// is already registered is reused rather than refused.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_http_requests_total",
		Help: "HTTP requests answered, by listener, method, route pattern and status code.",
	}, metricLabels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tms_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by listener, method, route pattern and status code.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, metricLabels)
	var err error
	if requests, err = ops.Register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = ops.Register(reg, duration); err != nil {
		return nil, err
	}
	return &metrics{requests: requests, duration: duration}, nil
}

// knownMethods keeps the method label bounded: anything else is "other".
var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

func methodLabel(m string) string {
	for _, k := range knownMethods {
		if m == k {
			return m
		}
	}
	return "other"
}

// quietRoutes are polled by probes and scrapers; they log at debug so that
// the access log shows traffic, not monitoring.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// observe logs one line per request and records it in the metrics, using
// chi's route pattern (not the raw path) so that ids in paths neither
// flood the logs' cardinality nor the metrics'.
func observe(listener string, logger *slog.Logger, m *metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			info := &requestInfo{}
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))

			elapsed := time.Since(start)
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK // the handler wrote nothing
			}
			// Unknown paths and wrong methods match no pattern and share one
			// label, so probing cannot grow the metrics without bound.
			route := "unmatched"
			if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePattern() != "" {
				route = rctx.RoutePattern()
			}
			code := strconv.Itoa(status)
			method := methodLabel(r.Method)
			m.requests.WithLabelValues(listener, method, route, code).Inc()
			m.duration.WithLabelValues(listener, method, route, code).Observe(elapsed.Seconds())

			level := slog.LevelInfo
			if quietRoutes[route] && status < 500 || refused(status, ww.Header()) {
				level = slog.LevelDebug
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Duration("duration", elapsed),
				slog.Int("bytes", ww.BytesWritten()),
			}
			info.mu.Lock()
			if info.tenant != "" {
				attrs = append(attrs, slog.String("tenant", info.tenant))
			}
			info.mu.Unlock()
			logger.LogAttrs(r.Context(), level, "http request", attrs...)
		})
	}
}

// refused reports an answer of the overload limits: a 429, or a 503 with
// Retry-After. Under overload there are thousands of them a second, and a
// log line each would add to the load being shed; they are counted in
// tms_ingress_rate_limited_total and tms_ingress_shed_total, and the
// request metrics, instead.
func refused(status int, h http.Header) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable && h.Get("Retry-After") != ""
}

// recoverer turns a panicking handler into a logged 500 with the JSON
// error body, so one bad request cannot take the listener down.
func recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					// The handler asked net/http to abort the response.
					panic(v)
				}
				logger.LogAttrs(r.Context(), slog.LevelError, "handler panicked",
					slog.String("method", r.Method), slog.String("path", r.URL.Path),
					slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				writeJSON(w, http.StatusInternalServerError,
					errorBody{Status: "error", Error: codeInternal, Message: msgInternal})
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// session is what authenticate puts in the request context.
type session struct {
	tenant tenants.Tenant
	token  string
}

type sessionKey struct{}

func sessionFrom(ctx context.Context) session {
	s, ok := ctx.Value(sessionKey{}).(session)
	if !ok {
		// Routes that read the session are mounted behind authenticate.
		panic("ingress: no session in the request context")
	}
	return s
}

// maxTokenLen bounds what is sent to the sessions store; real tokens are
// far shorter.
const maxTokenLen = 256

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive, RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	if token == "" || len(token) > maxTokenLen {
		return "", false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return token, true
}

// authenticate admits a request only with a live session token and puts
// the token's tenant into the request context.
func (a *api) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			writeError(w, r, a.logger, errUnauthorized(false))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		tenantID, err := a.sessions.Authenticate(ctx, token)
		if err != nil {
			writeError(w, r, a.logger, fmt.Errorf("authenticating session: %w", err))
			return
		}
		t, err := a.registry.Get(ctx, tenantID)
		if err != nil {
			writeError(w, r, a.logger, fmt.Errorf("loading tenant %s of session: %w", tenantID, err))
			return
		}
		setLogTenant(r.Context(), t.ID)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, session{tenant: t, token: token})))
	})
}

// checkClientID checks a client_id given in a body against the session:
// a malformed id is 400 invalid_field, another tenant's is 403.
// ownedBody is a request body of an authenticated route that may name the
// caller's client_id; claimedClientID is nil when it names none.
type ownedBody interface{ claimedClientID() *string }

// decodeOwned decodes a tenant-scoped body and refuses one that names
// another tenant (403): one place for that rule, whichever route.
func decodeOwned(w http.ResponseWriter, r *http.Request, req ownedBody) error {
	if err := decodeJSON(w, r, req); err != nil {
		return err
	}
	if id := req.claimedClientID(); id != nil {
		return checkClientID(sessionFrom(r.Context()), *id)
	}
	return nil
}

func checkClientID(s session, clientID string) error {
	if err := subjects.ValidID(clientID); err != nil {
		return errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
	}
	if clientID != s.tenant.ID {
		return errForbiddenClient
	}
	return nil
}
