package tenants_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/tenants"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tenantEnv is one NATS server and one process's tenants wiring over it
// (tenantstest.Env): a provisioner with a test prefix, a running
// registry, pools and tickets.
type tenantEnv struct {
	*tenantstest.Env
	nats   *testkit.NATS
	js     jetstream.JetStream
	prefix string
	prov   *tenants.Provisioner
	reg    *tenants.Registry
}

func newTenantEnv(t testing.TB) *tenantEnv {
	t.Helper()
	e := &tenantEnv{nats: testkit.StartNATS(t)}
	e.js = e.nats.JetStream(t)
	e.Env = tenantstest.New(t, e.js, tenantstest.Config{})
	e.prefix, e.prov, e.reg = e.Prefix, e.Provisioner, e.Registry
	return e
}

func (e *tenantEnv) createAccount(t testing.TB, name, email string) tenants.Tenant {
	t.Helper()
	return e.Account(t, name, email)
}
