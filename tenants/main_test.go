package tenants_test

import (
	"context"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"tms/ops/testkit"
	"tms/tenants"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// run starts a Run method in the background and stops it (and waits for
// it) when the test ends.
func run(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := fn(ctx); err != nil {
			t.Errorf("%s.Run: %v", what, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func newProvisioner(t *testing.T, prefix string, migrations fs.FS) *tenants.Provisioner {
	t.Helper()
	p, err := tenants.NewProvisioner(tenants.ProvisionerConfig{
		ServerURLs: []string{testkit.PostgresURL()}, DBPrefix: prefix, Migrations: migrations,
		Logger: testkit.Logger(t),
	})
	if err != nil {
		t.Fatalf("NewProvisioner: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func startRegistry(t *testing.T, js jetstream.JetStream, prov *tenants.Provisioner) *tenants.Registry {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	r, err := tenants.NewRegistry(ctx, tenants.RegistryConfig{JS: js, Provisioner: prov, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	run(t, "Registry", r.Run)
	testkit.Eventually(t, 10*time.Second, r.Ready, "registry ready")
	return r
}

func startSessions(t *testing.T, js jetstream.JetStream, now func() time.Time, ttl time.Duration) *tenants.Sessions {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	s, err := tenants.NewSessions(ctx, tenants.SessionsConfig{JS: js, Logger: testkit.Logger(t), Now: now, TTL: ttl})
	if err != nil {
		t.Fatalf("NewSessions: %v", err)
	}
	run(t, "Sessions", s.Run)
	testkit.Eventually(t, 10*time.Second, s.Ready, "sessions ready")
	return s
}

func startPools(t *testing.T, cfg tenants.PoolsConfig) *tenants.Pools {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(t)
	}
	p := tenants.NewPools(cfg)
	run(t, "Pools", p.Run)
	return p
}

// tenantEnv is one NATS server, one provisioner with a test prefix and a
// running registry.
type tenantEnv struct {
	nats   *testkit.NATS
	js     jetstream.JetStream
	prefix string
	prov   *tenants.Provisioner
	reg    *tenants.Registry
}

func newTenantEnv(t *testing.T) *tenantEnv {
	t.Helper()
	e := &tenantEnv{nats: testkit.StartNATS(t), prefix: testkit.DatabasePrefix(t)}
	e.js = e.nats.JetStream(t)
	e.prov = newProvisioner(t, e.prefix, nil)
	e.reg = startRegistry(t, e.js, e.prov)
	return e
}

func (e *tenantEnv) createAccount(t *testing.T, name, email string) tenants.Tenant {
	t.Helper()
	ten, err := e.reg.CreateAccount(testkit.Context(t, 60*time.Second), name, email, "correct horse battery")
	if err != nil {
		t.Fatalf("CreateAccount(%q, %q): %v", name, email, err)
	}
	return ten
}
