package tenants_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/tenants"
)

// provisionMany provisions n tenant databases, a few at a time.
func provisionMany(t *testing.T, prov *tenants.Provisioner, n int) []tenants.Tenant {
	t.Helper()
	ctx := testkit.Context(t, 60*time.Second)
	out := make([]tenants.Tenant, n)
	ids := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fmt.Sprintf("cpool%04d", i)
				server, db, err := prov.Provision(ctx, id)
				if err != nil {
					failed.Add(1)
					t.Errorf("Provision %s: %v", id, err)
					continue
				}
				out[i] = tenants.Tenant{ID: id, DBServer: server, DBName: db}
			}
		}()
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	return out
}

func countAgents(ctx context.Context, conn *pgxpool.Conn) error {
	var n int
	return conn.QueryRow(ctx, `SELECT count(*) FROM service_agents`).Scan(&n)
}

// TestPoolBound serves 150 tenants through a role that may open only 10
// connections, with the pools bounded to 8: every query succeeds and
// neither our count nor the server's ever passes 8.
func TestPoolBound(t *testing.T) {
	t.Parallel()
	const tenantCount, bound, roleLimit, rounds = 150, 8, 10, 3
	role := newRole(t, fmt.Sprintf("LOGIN CREATEDB CONNECTION LIMIT %d", roleLimit))
	prefix := testkit.DatabasePrefix(t)
	u, err := url.Parse(testkit.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	prov := tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{ServerURLs: []string{u.String()}, DBPrefix: prefix})
	all := provisionMany(t, prov, tenantCount)

	pools := tenantstest.StartPools(t, tenants.PoolsConfig{Provisioner: prov, MaxConnsPerServer: bound, ConnsPerTenant: 2})

	// Watch both our count and the server's while the load runs.
	monitor, err := connectTo(t, testkit.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	var maxOurs, maxServer int
	done := make(chan struct{})
	var mwg sync.WaitGroup
	mwg.Add(1)
	go func() {
		defer mwg.Done()
		ctx := context.Background()
		for {
			if c := pools.Stats().OpenConns; c > maxOurs {
				maxOurs = c
			}
			var n int
			if err := monitor.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, role).Scan(&n); err != nil {
				t.Errorf("pg_stat_activity: %v", err)
				return
			}
			maxServer = max(maxServer, n)
			select {
			case <-done:
				return
			default:
			}
		}
	}()

	ctx := testkit.Context(t, 60*time.Second)
	start := time.Now()
	var failures atomic.Int32
	for r := range rounds {
		var wg sync.WaitGroup
		for _, ten := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := pools.Do(ctx, ten, countAgents); err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("round %d, tenant %s: %v", r, ten.ID, err)
					}
				}
			}()
		}
		wg.Wait()
	}
	close(done)
	mwg.Wait()
	t.Logf("%d queries in %v; most connections open: ours %d, server %d", rounds*tenantCount, time.Since(start),
		maxOurs, maxServer)
	if failures.Load() > 0 {
		t.Fatalf("%d of %d queries failed", failures.Load(), rounds*tenantCount)
	}
	if maxOurs > bound || maxServer > bound {
		t.Errorf("connections open: ours at most %d, server at most %d; want both <= %d", maxOurs, maxServer, bound)
	}
	if st := pools.Stats(); st.OpenConns > bound || st.OpenPools > tenantCount {
		t.Errorf("Stats = %+v", st)
	}
}

// TestPoolsWaitForBusyPoolAndEvictIdle: with room for one connection, a
// second tenant waits while the first one's query runs (its pool is not
// closed under it), then takes the slot; idle pools are closed.
func TestPoolsWaitForBusyPoolAndEvictIdle(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	prov := tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix})
	all := provisionMany(t, prov, 2)
	a, b := all[0], all[1]
	pools := tenantstest.StartPools(t, tenants.PoolsConfig{Provisioner: prov, MaxConnsPerServer: 1, IdleTimeout: 300 * time.Millisecond})
	ctx := testkit.Context(t, 30*time.Second)

	holding, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := pools.Do(ctx, a, func(ctx context.Context, conn *pgxpool.Conn) error {
			close(holding)
			<-release
			// The connection still works: nobody closed the pool under us.
			return countAgents(ctx, conn)
		})
		if err != nil {
			t.Errorf("tenant a: %v", err)
		}
	}()
	<-holding

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := pools.Do(short, b, countAgents)
	cancel()
	if !errors.Is(err, tenants.ErrUnavailable) {
		t.Errorf("tenant b while the only slot is busy = %v, want ErrUnavailable after its deadline", err)
	}

	bDone := make(chan error, 1)
	go func() { bDone <- pools.Do(ctx, b, countAgents) }()
	close(release)
	wg.Wait()
	if err := <-bDone; err != nil {
		t.Fatalf("tenant b after a finished: %v", err)
	}
	if st := pools.Stats(); st.OpenConns > 1 {
		t.Errorf("Stats = %+v, want at most 1 connection", st)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		st := pools.Stats()
		return st.OpenPools == 0 && st.OpenConns == 0
	}, "idle pools closed")

	// A tenant whose database is gone is an error, not a hang.
	err = pools.Do(ctx, tenants.Tenant{ID: "cgone", DBServer: a.DBServer, DBName: prefix + "cgone"}, countAgents)
	if err == nil {
		t.Error("Do on a missing database succeeded")
	}
	if err := pools.Do(ctx, tenants.Tenant{ID: "cx", DBServer: "10.0.0.1:5432", DBName: "x"}, countAgents); err == nil {
		t.Error("Do on an unconfigured server succeeded")
	}
}
