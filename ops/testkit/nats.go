package testkit

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/embedded"
)

// NATS is an embedded JetStream server on a free loopback port (FreePort) with a
// temp store, shut down when the test ends.
type NATS struct {
	t      testing.TB
	Server *server.Server
	dir    string
	port   int
	cfg    NATSConfig
}

// NATSConfig is what StartNATSWith changes from StartNATS's server, for
// tests of how tms refuses a server it cannot use.
type NATSConfig struct {
	Username, Password string // credentials clients must give; empty: none
	NoJetStream        bool
	// DenyPublish lists subjects the user (Username) may not publish to,
	// e.g. "$JS.API.>" for an account whose JetStream API is closed.
	DenyPublish []string
}

func (c NATSConfig) isZero() bool {
	return c.Username == "" && c.Password == "" && !c.NoJetStream && len(c.DenyPublish) == 0
}

// StartNATS starts a fresh server for the test.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, dir: t.TempDir()}
	n.start(FreePort(t))
	t.Cleanup(n.Stop)
	return n
}

// StartNATSWith starts a server for the test that differs from
// StartNATS's as cfg says.
func StartNATSWith(t testing.TB, cfg NATSConfig) *NATS {
	t.Helper()
	n := &NATS{t: t, dir: t.TempDir(), cfg: cfg}
	n.start(FreePort(t))
	t.Cleanup(n.Stop)
	return n
}

func (n *NATS) start(port int) {
	n.t.Helper()
	if !n.cfg.isZero() {
		n.startWith(port)
		return
	}
	srv, err := embedded.Start(embedded.Config{
		Name: "test-" + RandomSuffix(6), StoreDir: n.dir, Host: "127.0.0.1", Port: port,
		ReadyTimeout: 20 * time.Second,
	})
	if err != nil {
		n.t.Fatalf("start embedded nats: %v", err)
	}
	n.Server = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
}

// startWith starts a server with n.cfg; embedded.Start has no setting
// for credentials or for turning JetStream off.
func (n *NATS) startWith(port int) {
	n.t.Helper()
	opts := &server.Options{
		ServerName: "test-" + RandomSuffix(6), Host: "127.0.0.1", Port: port,
		JetStream: !n.cfg.NoJetStream, StoreDir: n.dir,
		NoSigs: true, NoLog: true, DisableJetStreamBanner: true,
	}
	if len(n.cfg.DenyPublish) > 0 {
		opts.Users = []*server.User{{Username: n.cfg.Username, Password: n.cfg.Password,
			Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: n.cfg.DenyPublish}}}}
	} else {
		opts.Username, opts.Password = n.cfg.Username, n.cfg.Password
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		n.t.Fatalf("embedded nats: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		embedded.Stop(srv)
		n.t.Fatal("embedded nats: not ready")
	}
	n.Server = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return n.Server.ClientURL() }

// Stop shuts the server down (idempotent).
func (n *NATS) Stop() {
	if n.Server != nil {
		embedded.Stop(n.Server)
		n.Server = nil
	}
}

// Restart stops the server and starts it again on the same port and store,
// as a process restart would. Clients created by Connect reconnect.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	n.start(n.port)
}

// Connect opens a client connection that reconnects forever (so it rides
// out Restart) and is closed when the test ends.
func (n *NATS) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream opens a new connection and returns its JetStream context.
func (n *NATS) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
