package tenants_test

import (
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
)

// TestAgentsRevision: Revision is the KV revision of the tenant's last
// agent write, at once for the process's own writes, and, through Run's
// watch, for writes another process made (another ingress), including
// those made before it started.
func TestAgentsRevision(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	open := func() *tenants.Agents {
		return tenantstest.NewAgents(t, tenants.AgentsConfig{Pools: e.Pools, JS: e.js})
	}
	here, there := open(), open() // the bucket's creators
	kv, err := e.js.KeyValue(ctx, subjects.BucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	revOf := func(tenant, agent string) uint64 {
		t.Helper()
		en, err := kv.Get(ctx, subjects.AgentKey(tenant, agent))
		if err != nil {
			t.Fatal(err)
		}
		return en.Revision()
	}
	testkit.Run(t, "Agents", here.Run)
	ten := e.createAccount(t, "Revisions", "rev@agents.example")
	if got := here.Revision(ten.ID); got != 0 {
		t.Fatalf("Revision before any write = %d", got)
	}

	ann, err := there.Create(ctx, ten, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	want := revOf(ten.ID, ann.ID)
	if got := there.Revision(ten.ID); got != want {
		t.Fatalf("the writer's Revision = %d, want the put's %d", got, want)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return here.Revision(ten.ID) == want },
		"the other process's watch delivering the create")

	if _, err := here.SetStatus(ctx, ten, ann.ID, subjects.AgentUnavailable); err != nil {
		t.Fatal(err)
	}
	want = revOf(ten.ID, ann.ID)
	if got := here.Revision(ten.ID); got != want {
		t.Fatalf("Revision right after its own SetStatus = %d, want %d", got, want)
	}
	if got := there.Revision(ten.ID); got >= want {
		t.Fatalf("a process without Run knew of another's write: %d", got)
	}

	late := open()
	testkit.Run(t, "Agents", late.Run)
	testkit.Eventually(t, 10*time.Second, func() bool { return late.Revision(ten.ID) == want },
		"a watch started after the writes")
}
