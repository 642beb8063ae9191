package tenants_test

import (
	"os"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
)

// TestMigrateOnFirstUse: a tenant database provisioned by an earlier
// version (migration 0001 only, a ticket in it) gets the later migrations
// when processes first use it, several at once (three workers with pools
// of their own): each of them reads the ticket, with moves 0, and the
// database records every migration once; the new column then takes a
// move.
func TestMigrateOnFirstUse(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	prefix := testkit.DatabasePrefix(t)
	first, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	old := tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix,
		Migrations: fstest.MapFS{"0001_init.sql": {Data: first}}})
	id := "c" + testkit.RandomSuffix(10)
	server, dbName, err := old.Provision(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ten := tenants.Tenant{ID: id, Name: "Old Co", DBServer: server, DBName: dbName}
	conn, err := pgx.Connect(ctx, testkit.DatabaseURL(t, testkit.PostgresURL(), dbName))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	slot := time.Date(2031, 1, 2, 3, 4, 0, 0, time.UTC)
	ticket, err := subjects.NewSlotTicketID("aold", slot, "oldoldoldoldold1")
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO service_agents (id, name, status, available_since) VALUES ('aold', 'Ann', 'available', now()),
			('anew', 'Bob', 'available', now())`,
		`INSERT INTO slots (id, sa_id, time, available) VALUES ('aold.203101020304', 'aold', '2031-01-02T03:04:00Z', 'unavailable')`,
		`INSERT INTO tickets (id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id)
			VALUES ('` + ticket + `', 'GOLD', 'allocated', '2031-01-02T03:00:00Z', '2031-01-02T05:00:00Z',
			'2031-01-02T03:04:00Z', '2031-01-02T03:05:00Z', 'aold', 'aold.203101020304')`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var hasMoves bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_name = 'tickets' AND column_name = 'moves')`).Scan(&hasMoves); err != nil || hasMoves {
		t.Fatalf("the old schema has moves already (%v, %v)", hasMoves, err)
	}

	const workers = 3
	stores := make([]*tenants.Tickets, workers)
	for i := range stores {
		prov := tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix})
		stores[i] = tenants.NewTickets(tenantstest.StartPools(t, tenants.PoolsConfig{Provisioner: prov}), testkit.Logger(t))
	}
	var wg sync.WaitGroup
	rows := make([]tenants.TicketRow, workers)
	errs := make([]error, workers)
	for i, s := range stores {
		wg.Go(func() { rows[i], errs[i] = s.Get(ctx, ten, ticket) })
	}
	wg.Wait()
	for i := range stores {
		if errs[i] != nil || rows[i].ID != ticket || rows[i].Moves != 0 || rows[i].Agent != "aold" {
			t.Fatalf("worker %d read %+v, %v", i, rows[i], errs[i])
		}
	}
	recorded, _ := conn.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	versions, err := pgx.CollectRows(recorded, pgx.RowTo[int32])
	if err != nil || !slices.Equal(versions, []int32{1, 2, 3, 4}) {
		t.Fatalf("schema_migrations = %v, %v; want [1 2 3 4]", versions, err)
	}
	// 0004: the content columns, nullable and with no default (an
	// instant ADD COLUMN), NULL on the row written before them.
	for _, col := range []string{"subject", "description"} {
		var nullable string
		var def *string
		if err := conn.QueryRow(ctx, `SELECT is_nullable, column_default FROM information_schema.columns
			WHERE table_name = 'tickets' AND column_name = $1`, col).Scan(&nullable, &def); err != nil || nullable != "YES" || def != nil {
			t.Errorf("column %s: nullable %q, default %v, %v; want nullable with no default", col, nullable, def, err)
		}
	}
	var nulls bool
	if err := conn.QueryRow(ctx, `SELECT subject IS NULL AND description IS NULL FROM tickets WHERE id = $1`, ticket).
		Scan(&nulls); err != nil || !nulls {
		t.Errorf("the old row's content: all NULL %v, %v", nulls, err)
	}
	if rows[0].Subject != "" || rows[0].Description != "" {
		t.Errorf("the old row reads with content %+v", rows[0])
	}

	moved := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: id, Ticket: ticket, Type: subjects.Gold,
		Agent: "anew", SlotTime: slot.Add(time.Minute), CreatedAt: slot.Add(-4 * time.Minute), Deadline: slot.Add(-4*time.Minute + 2*time.Hour)}
	res, err := stores[0].ApplyMoved(ctx, ten, moved, 1)
	if err != nil || !res.Applied || res.FromAgent != "aold" || !res.FromSlotTime.Equal(slot) {
		t.Fatalf("ApplyMoved on the migrated database = %+v, %v", res, err)
	}
}
