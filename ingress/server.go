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
)

// Server timeouts. A slow or stalled client cannot hold a connection (and
// its goroutine) for long: headers must arrive within 5 s, the whole
// request within 10 s; the answer must be written within 15 s, which every
// handler's storage deadline stays under.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 15 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 10 * time.Second
)

// Server is one HTTP listener with timeouts and graceful shutdown. It can
// answer before its process is set up (Start) and take its real handler
// later (SetHandler), so that probes find the port open and /readyz says
// what the process still waits for.
type Server struct {
	name    string
	ln      net.Listener
	srv     *http.Server
	logger  *slog.Logger
	handler atomic.Pointer[http.Handler]
	start   sync.Once
	errc    chan error // Serve's result
	// swapped is closed by the first SetHandler; a request the Starting
	// handler would refuse waits up to hold for it (startHold).
	swapped chan struct{}
	swap    sync.Once
	hold    time.Duration
	held    atomic.Int64 // requests waiting for SetHandler now
}

// startHold is how long a request that arrives while the process still
// sets up waits for the real router before the Starting handler answers
// it 503: a client that starts with its server (a script that waits for
// /healthz, then sends) is served rather than refused when start-up takes
// a moment, and one that finds a server waiting for its cluster still
// hears so within seconds.
const startHold = 2 * time.Second

// NewServer returns a server that will answer on ln with h once Start or
// Run is called. name ("public", "internal") labels its log lines.
func NewServer(name string, ln net.Listener, h http.Handler, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("listener", name), slog.String("addr", ln.Addr().String()))
	s := &Server{name: name, ln: ln, logger: logger, errc: make(chan error, 1), swapped: make(chan struct{}), hold: startHold}
	s.handler.Store(&h)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := *s.handler.Load()
			if st, ok := h.(startingHandler); ok && st.holds(r) {
				h = s.awaitHandler(r.Context())
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Name is the listener's name: public, internal or ops.
func (s *Server) Name() string { return s.name }

// SetHandler answers every request that arrives from now on with h, and
// the requests held at start-up (startHold).
func (s *Server) SetHandler(h http.Handler) {
	s.handler.Store(&h)
	s.swap.Do(func() { close(s.swapped) })
}

// awaitHandler waits at most s.hold for SetHandler, then returns the
// handler in place (still Starting if none came).
func (s *Server) awaitHandler(ctx context.Context) http.Handler {
	s.held.Add(1)
	defer s.held.Add(-1)
	t := time.NewTimer(s.hold)
	defer t.Stop()
	select {
	case <-s.swapped:
	case <-t.C:
	case <-ctx.Done():
	}
	return *s.handler.Load()
}

// Start begins answering on the listener, if it has not yet, and returns
// at once; Run or Stop must follow.
func (s *Server) Start() {
	s.start.Do(func() {
		go func() { s.errc <- s.srv.Serve(s.ln) }()
		s.logger.Info("http listener serving")
	})
}

// Run serves (Start) until ctx is done, then stops (Stop). An error means
// the listener failed or in-flight requests outlived the deadline.
func (s *Server) Run(ctx context.Context) error {
	s.Start()
	select {
	case err := <-s.errc:
		// Serve returns only on failure while Shutdown has not been called.
		return fmt.Errorf("http listener %s: %w", s.name, err)
	case <-ctx.Done():
	}
	return s.stop(context.WithoutCancel(ctx))
}

// Stop stops accepting, lets in-flight requests finish within a deadline
// and returns nil; for a server started but never Run.
func (s *Server) Stop(ctx context.Context) error {
	s.Start()
	return s.stop(ctx)
}

func (s *Server) stop(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-s.errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("http listener %s: shutting down: %w", s.name, err)
	}
	s.logger.Info("http listener stopped")
	return nil
}
