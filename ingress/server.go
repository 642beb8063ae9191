package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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

// Server is one HTTP listener with timeouts and graceful shutdown.
type Server struct {
	name   string
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
}

// NewServer returns a server that will answer on ln with h once Run is
// called. name ("public", "internal") labels its log lines.
func NewServer(name string, ln net.Listener, h http.Handler, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("listener", name), slog.String("addr", ln.Addr().String()))
	return &Server{
		name:   name,
		ln:     ln,
		logger: logger,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is done, then stops accepting, lets in-flight
// requests finish within a deadline and returns nil. An error means the
// listener failed or in-flight requests outlived the deadline.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.logger.Info("http listener serving")

	select {
	case err := <-errc:
		// Serve returns only on failure while Shutdown has not been called.
		return fmt.Errorf("http listener %s: %w", s.name, err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("http listener %s: shutting down: %w", s.name, err)
	}
	s.logger.Info("http listener stopped")
	return nil
}
