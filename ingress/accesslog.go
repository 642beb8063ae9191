package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
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

// quietRoutes are polled by probes and scrapers; they log at debug so that
// the access log shows traffic, not monitoring.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// hotRoutes are the admission path: at thousands of requests a second a
// line each would bury everything else in the default log. An answer
// below 500 there is logged at debug, and at most once a second per
// listener and route at info, with how many answers it stands for
// (sampled); a 5xx is always a line of its own.
var hotRoutes = map[string]bool{
	"/create_ticket": true, "/cancel_ticket": true, "/tickets/{ticket_id}": true,
	"/validate_eta": true, "/allocate_slot": true, "/capacity": true,
}

// sampleEvery is how often a hot route's answers get an info line.
const sampleEvery = time.Second

// sampler lets one line a route through per period and counts the
// others.
type sampler struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func newSampler(every time.Duration, now func() time.Time) *sampler {
	return &sampler{every: every, now: now, last: map[string]time.Time{}, held: map[string]int{}}
}

// admit reports whether this answer of route gets its info line, and if
// so how many answers of the route went to debug since the last one.
func (s *sampler) admit(route string) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if last, ok := s.last[route]; ok && now.Sub(last) < s.every {
		s.held[route]++
		return false, 0
	}
	held := s.held[route]
	s.last[route], s.held[route] = now, 0
	return true, held
}

// observe logs one line per request and records it in the metrics, using
// chi's route pattern (not the raw path) so that ids in paths neither
// flood the logs' cardinality nor the metrics'.
func observe(listener string, logger *slog.Logger, m *metrics) func(http.Handler) http.Handler {
	sample := newSampler(sampleEvery, time.Now)
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
			if level == slog.LevelInfo && hotRoutes[route] && status < 500 {
				if ok, held := sample.admit(route); ok {
					attrs = append(attrs, slog.Bool("sampled", true), slog.Int("unlogged_since", held))
				} else {
					level = slog.LevelDebug
				}
			}
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
