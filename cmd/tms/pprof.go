package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofReadHeaderTimeout bounds a profiler request's headers; the answer
// has no write timeout, since a CPU profile streams for as long as it
// was asked to (?seconds=N) and net/http/pprof refuses one longer than
// the server's write timeout.
const pprofReadHeaderTimeout = 5 * time.Second

// startPprof serves the Go profiler's handlers (/debug/pprof/...) on
// --pprof-addr, a listener of their own: the public and internal muxes
// never carry them. stop closes the listener and any profile still
// streaming (a profile is for an operator at a terminal, not worth
// delaying shutdown for). Nothing listens when the flag is empty.
func startPprof(ctx context.Context, cfg config, logger *slog.Logger) (stop func(), err error) {
	if cfg.PprofAddr == "" {
		return func() {}, nil
	}
	ln, err := listen(ctx, cfg.PprofAddr, "pprof-addr")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log := logger.With(slog.String("listener", "pprof"), slog.String("addr", ln.Addr().String()))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: pprofReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof listener failed", "err", err)
		}
	}()
	log.Info("pprof listener serving")
	return func() {
		_ = srv.Close()
		<-done
		log.Info("pprof listener stopped")
	}, nil
}
