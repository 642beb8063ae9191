// Package embedded starts nats-server v2 inside the process, with
// JetStream on a file store, for `tms serve` and for tests.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config describes one embedded server. The zero Port means 4222; use -1
// for a random free port.
type Config struct {
	Name     string // server name; must be unique within a cluster
	StoreDir string // JetStream file store
	Host     string
	Port     int
	// NoSync turns off fsync of every write. The default (false) runs with
	// sync_interval "always": an acknowledged write survives an OS crash.
	// Only benchmarks that compare the two should set it.
	NoSync bool
	// Cluster, when ClusterPort is set, joins a cluster over Routes.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string // nats-route://host:port of every member
	// ReadyTimeout bounds the wait for the server to accept clients.
	ReadyTimeout time.Duration
}

// ErrAddrInUse reports that the client (or cluster) port is taken.
var ErrAddrInUse = errors.New("address already in use")

// Start starts the server and waits until it accepts client connections.
// A taken port is reported as ErrAddrInUse before the server is started, so
// the caller can name the flag to change.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: empty store dir")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats: store dir %s: %w", cfg.StoreDir, err)
	}
	if err := probeWritable(cfg.StoreDir); err != nil {
		return nil, fmt.Errorf("embedded nats: store dir %s is not writable: %w", cfg.StoreDir, err)
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = 4222
	}
	if port > 0 {
		if err := probePort(host, port); err != nil {
			return nil, err
		}
	}
	opts := &server.Options{
		ServerName:             cfg.Name,
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		SyncAlways:             !cfg.NoSync,
		NoSigs:                 true,
		NoLog:                  true,
		DisableJetStreamBanner: true,
	}
	if cfg.ClusterPort != 0 {
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.ClusterHost, Port: cfg.ClusterPort}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded nats: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats: not ready within %s", timeout)
	}
	return srv, nil
}

// Stop shuts the server down and waits for it.
func Stop(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// LogAttrs describes a running server for a startup log line.
func LogAttrs(srv *server.Server) []any {
	return []any{slog.String("nats_url", srv.ClientURL()), slog.String("nats_server", srv.Name()),
		slog.String("nats_version", server.VERSION), slog.String("store_dir", srv.StoreDir())}
}

func probePort(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%w: %s:%d: %v", ErrAddrInUse, host, port, err)
	}
	return ln.Close()
}

func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(filepath.Clean(name))
}
