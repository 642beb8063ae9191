package tenantstest_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
)

// TestMain fails the package if the wiring leaves a goroutine behind
// (a registry's watch, a pool) after the test that built it ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEnv: the env's registry serves at once, an account lands in a
// database under the env's prefix, agents and sessions work on the env's
// clock, and a ticket that was never written has no row.
func TestEnv(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2030, 5, 6, 7, 8, 0, 0, time.UTC))
	e := tenantstest.New(t, testkit.StartNATS(t).JetStream(t), tenantstest.Config{Now: clock.Now})
	if !e.Registry.Ready() {
		t.Fatal("registry not ready once New returned")
	}
	ten := e.Account(t, "Kit Co", "")
	if !strings.HasPrefix(ten.DBName, e.Prefix) {
		t.Errorf("database %s outside the prefix %s", ten.DBName, e.Prefix)
	}
	ctx := testkit.Context(t, 30*time.Second)
	agents := e.Agents()
	a, err := agents.Create(ctx, ten, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	if !a.CreatedAt.Equal(clock.Now()) {
		t.Errorf("agent created at %v, want the env's clock %v", a.CreatedAt, clock.Now())
	}
	if e.Agents() != agents {
		t.Error("Agents made twice")
	}
	_, expires, err := e.Sessions().Issue(ctx, ten.ID)
	if err != nil || !expires.After(clock.Now()) {
		t.Errorf("Issue = %v, %v", expires, err)
	}
	if _, ok := tenantstest.TicketRow(t, e.Tickets, ten, "never"); ok {
		t.Error("a row for a ticket never written")
	}
}
