// Package tenantstest builds the tenants wiring a test needs (provisioner,
// registry, pools, agents, tickets, sessions) over a NATS connection and
// the test Postgres, each part stopped or closed when the test ends.
//
// It is apart from ops/testkit because it imports tenants: testkit stays
// importable by any package's internal tests, this one by the tests of
// tenants (package tenants_test) and of everything above it. Production
// code never imports it.
package tenantstest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops"
	"tms/ops/testkit"
	"tms/tenants"
)

// startTimeout bounds the wait for a registry or sessions snapshot.
const startTimeout = 10 * time.Second

// NewProvisioner returns a provisioner, closed when the test ends, on
// cfg with the test's defaults for what it leaves empty: the test
// Postgres server, a fresh database prefix (whose databases are dropped
// at cleanup, testkit.DatabasePrefix) and a logger to t.Log.
func NewProvisioner(t testing.TB, cfg tenants.ProvisionerConfig) *tenants.Provisioner {
	t.Helper()
	if len(cfg.ServerURLs) == 0 {
		cfg.ServerURLs = []string{testkit.PostgresURL()}
	}
	if cfg.DBPrefix == "" {
		cfg.DBPrefix = testkit.DatabasePrefix(t)
	}
	cfg.Logger = orTestLogger(t, cfg.Logger)
	p, err := tenants.NewProvisioner(cfg)
	if err != nil {
		t.Fatalf("NewProvisioner: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartRegistry returns a registry on cfg (a nil Logger logs to t.Log)
// whose Run goes until the test ends, once its first snapshot is loaded.
func StartRegistry(t testing.TB, cfg tenants.RegistryConfig) *tenants.Registry {
	t.Helper()
	cfg.Logger = orTestLogger(t, cfg.Logger)
	r, err := Retry(t, "tenant registry", func(ctx context.Context) (*tenants.Registry, error) {
		return tenants.NewRegistry(ctx, cfg)
	})
	return started(t, "Registry", r, err)
}

// StartSessions returns sessions on cfg (a nil Logger logs to t.Log)
// whose Run goes until the test ends, once their first snapshot is
// loaded.
func StartSessions(t testing.TB, cfg tenants.SessionsConfig) *tenants.Sessions {
	t.Helper()
	cfg.Logger = orTestLogger(t, cfg.Logger)
	s, err := Retry(t, "sessions", func(ctx context.Context) (*tenants.Sessions, error) {
		return tenants.NewSessions(ctx, cfg)
	})
	return started(t, "Sessions", s, err)
}

// Retry makes what with ops.Waiter's retry, as tms start-up does, for at
// most 30 s: a replicated bucket's create can meet a JetStream meta
// leader that has not heard from every peer yet ("no suitable peers for
// placement", after a leader change on a loaded machine), which start-up
// waits out and a test must too.
func Retry[P any](t testing.TB, what string, build func(ctx context.Context) (P, error)) (P, error) {
	t.Helper()
	var p P
	err := ops.NewWaiter(testkit.Logger(t)).Retry(testkit.Context(t, 30*time.Second), what, func(ctx context.Context) error {
		var err error
		p, err = build(ctx)
		return err
	})
	return p, err
}

// started fails the test if what could not be made, else starts it
// (testkit.Start) and returns it.
func started[P testkit.Part](t testing.TB, what string, p P, err error) P {
	t.Helper()
	if err != nil {
		t.Fatalf("New%s: %v", what, err)
	}
	testkit.Start(t, what, p, startTimeout)
	return p
}

// StartPools returns pools on cfg (a nil Logger logs to t.Log) whose Run
// goes until the test ends; then every pool is closed.
func StartPools(t testing.TB, cfg tenants.PoolsConfig) *tenants.Pools {
	t.Helper()
	cfg.Logger = orTestLogger(t, cfg.Logger)
	p := tenants.NewPools(cfg)
	testkit.Run(t, "Pools", p.Run)
	return p
}

// NewAgents returns agents on cfg (a nil Logger logs to t.Log), without
// Run: a test that needs the watch of other processes' writes runs it
// (testkit.Run).
func NewAgents(t testing.TB, cfg tenants.AgentsConfig) *tenants.Agents {
	t.Helper()
	cfg.Logger = orTestLogger(t, cfg.Logger)
	a, err := Retry(t, "agents", func(ctx context.Context) (*tenants.Agents, error) {
		return tenants.NewAgents(ctx, cfg)
	})
	if err != nil {
		t.Fatalf("NewAgents: %v", err)
	}
	return a
}

// orTestLogger is log, or one writing to t.Log if log is nil.
func orTestLogger(t testing.TB, log *slog.Logger) *slog.Logger {
	if log == nil {
		return testkit.Logger(t)
	}
	return log
}

// TicketRow returns the row of ticket id of ten, ok false while there is
// none; any other error fails the test.
func TicketRow(t testing.TB, tickets *tenants.Tickets, ten tenants.Tenant, id string) (row tenants.TicketRow, ok bool) {
	t.Helper()
	row, err := tickets.Get(testkit.Context(t, 10*time.Second), ten, id)
	if errors.Is(err, tenants.ErrTicketNotFound) {
		return tenants.TicketRow{}, false
	}
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return row, true
}

// Config is what one test's tenant wiring differs in; the zero value is
// the common case.
type Config struct {
	// Now is the clock of the registry, agents and sessions; nil:
	// time.Now.
	Now func() time.Time
	// Replicas is the replica count of the buckets; 0: 1.
	Replicas int
	// Prefix is the database-name prefix; "": a fresh one, whose
	// databases are dropped when the test ends.
	Prefix string
	// Pools bounds the pools (ConnsPerTenant, MaxConnsPerServer,
	// IdleTimeout); its Provisioner and Logger are filled in.
	Pools tenants.PoolsConfig
}

// Env is the tenant side of one process for a test: a provisioner, a
// running registry, pools and tickets over them; agents and sessions are
// made on first use (each opens a bucket a test may want to open first).
type Env struct {
	Prefix      string
	Provisioner *tenants.Provisioner
	Registry    *tenants.Registry
	Pools       *tenants.Pools
	Tickets     *tenants.Tickets
	JS          jetstream.JetStream

	t   testing.TB
	cfg Config

	mu       sync.Mutex
	agents   *tenants.Agents
	sessions *tenants.Sessions
}

// New builds the wiring over js for the test t, as Config says; all of it
// is stopped and closed when the test ends.
func New(t testing.TB, js jetstream.JetStream, cfg Config) *Env {
	t.Helper()
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = testkit.DatabasePrefix(t)
	}
	prov := NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix})
	e := &Env{Prefix: prefix, Provisioner: prov, JS: js, t: t, cfg: cfg}
	e.Registry = StartRegistry(t, tenants.RegistryConfig{JS: js, Provisioner: prov, Now: cfg.Now,
		Replicas: cfg.Replicas})
	pcfg := cfg.Pools
	pcfg.Provisioner = prov
	e.Pools = StartPools(t, pcfg)
	e.Tickets = tenants.NewTickets(e.Pools, testkit.Logger(t))
	return e
}

// Agents returns the env's agents (over its pools, on its clock), made
// on the first call.
func (e *Env) Agents() *tenants.Agents {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.agents == nil {
		e.agents = NewAgents(e.t, tenants.AgentsConfig{Pools: e.Pools, JS: e.JS, Now: e.cfg.Now,
			Replicas: e.cfg.Replicas})
	}
	return e.agents
}

// Sessions returns the env's running sessions, made on the first call.
func (e *Env) Sessions() *tenants.Sessions {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sessions == nil {
		e.sessions = StartSessions(e.t, tenants.SessionsConfig{JS: e.JS, Now: e.cfg.Now, Replicas: e.cfg.Replicas})
	}
	return e.sessions
}

// Account creates a tenant account (password "correct horse battery"),
// failing the test if it cannot; an empty email is a unique one.
func (e *Env) Account(t testing.TB, name, email string) tenants.Tenant {
	t.Helper()
	if email == "" {
		email = testkit.RandomSuffix(8) + "@tenantstest.example"
	}
	ten, err := e.Registry.CreateAccount(testkit.Context(t, 60*time.Second), name, email, "correct horse battery")
	if err != nil {
		t.Fatalf("CreateAccount(%q, %q): %v", name, email, err)
	}
	return ten
}
