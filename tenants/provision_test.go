package tenants_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
)

func connectTo(t *testing.T, url string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
	}
	return conn, err
}

// newRole creates a throwaway role (attrs e.g. "LOGIN") and drops it when
// the test ends: register it before anything the role will own, so the
// owned objects are cleaned up first.
func newRole(t *testing.T, attrs string) string {
	t.Helper()
	admin := testkit.AdminConn(t)
	role := "tmst_role_" + testkit.RandomSuffix(8)
	ctx := testkit.Context(t, 10*time.Second)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" "+attrs); err != nil {
		t.Fatalf("create role: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	return role
}

func TestProvisionedSchema(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ten := e.createAccount(t, "Schema Co", "db@schema.example")
	conn, err := connectTo(t, testkit.DatabaseURL(t, testkit.PostgresURL(), ten.DBName))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.Context(t, 30*time.Second)
	var versions []int
	rows, _ := conn.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(versions) == 0 || versions[0] != 1 {
		t.Fatalf("schema_migrations = %v, %v", versions, err)
	}
	exec := func(sql string, args ...any) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	}
	now := time.Now().UTC().Truncate(time.Minute)
	for _, sql := range []string{
		`INSERT INTO service_agents (id, name, status, available_since) VALUES ('a1', 'Ann', 'available', now())`,
		`INSERT INTO slots (id, sa_id, time, available) VALUES ('s1', 'a1', '2030-01-01T10:00:00Z', 'unavailable')`,
	} {
		if err := exec(sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	insertTicket := func(id, status string) error {
		return exec(`INSERT INTO tickets (id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id)
			VALUES ($1, 'GOLD', $2, $3, $4, '2030-01-01T10:00:00Z', '2030-01-01T10:01:00Z', 'a1', 's1')`,
			id, status, now, now.Add(2*time.Hour))
	}
	if err := insertTicket("t1", "allocated"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id, status, code string
	}{
		{"t2", "allocated", "23505"}, // a second live ticket in the agent-minute
		{"t1", "cancelled", "23505"}, // the same ticket id twice
		{"t3", "done", "23514"},      // unknown status
	} {
		if err := insertTicket(c.id, c.status); pgCodeOf(err) != c.code {
			t.Errorf("ticket %s %s: err %v, want SQLSTATE %s", c.id, c.status, err, c.code)
		}
	}
	if err := insertTicket("t4", "cancelled"); err != nil {
		t.Errorf("a cancelled ticket in a taken minute: %v", err)
	}
	for _, c := range []struct{ sql, code string }{
		{`INSERT INTO tickets (id, type, status, created_at, deadline) VALUES ('t5', 'gold', 'accepted', now(), now())`, "23514"},
		{`INSERT INTO slots (id, sa_id, time) VALUES ('s2', 'a1', '2030-01-01T10:00:00Z')`, "23505"},
		{`INSERT INTO slots (id, sa_id, time) VALUES ('s3', 'nobody', '2030-01-01T10:00:00Z')`, "23503"},
		{`INSERT INTO service_agents (id, name, status) VALUES ('a2', 'Bo', 'busy')`, "22P02"},
	} {
		if err := exec(c.sql); pgCodeOf(err) != c.code {
			t.Errorf("%s: err %v, want SQLSTATE %s", c.sql, err, c.code)
		}
	}
}

func pgCodeOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestProvisionFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	prefix := testkit.DatabasePrefix(t)
	broken := fstest.MapFS{
		"0001_init.sql":   {Data: []byte(`CREATE TABLE first (id int PRIMARY KEY);`)},
		"0002_broken.sql": {Data: []byte(`CREATE TABLE second (id int PRIMARY KEY REFERENCES nowhere (id));`)},
	}
	reg := tenantstest.StartRegistry(t, tenants.RegistryConfig{JS: js,
		Provisioner: tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix, Migrations: broken})})
	ctx := testkit.Context(t, 60*time.Second)

	_, err := reg.CreateAccount(ctx, "Half Way", "half@way.example", "correct horse battery")
	if err == nil || !strings.Contains(err.Error(), "0002_broken.sql") {
		t.Fatalf("CreateAccount with a broken migration = %v, want an error naming 0002_broken.sql", err)
	}
	admin := testkit.AdminConn(t)
	var dbs int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)`, prefix).Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 {
		t.Errorf("%d databases with prefix %s left behind", dbs, prefix)
	}
	kv, err := js.KeyValue(ctx, subjects.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	if keys := listKeys(t, kv); len(keys) != 0 {
		t.Errorf("registry keys left behind: %v", keys)
	}
	if reg.Len() != 0 {
		t.Errorf("query model has %d tenants", reg.Len())
	}

	// The e-mail and the sub_domain are free again.
	good := tenantstest.StartRegistry(t, tenants.RegistryConfig{JS: js,
		Provisioner: tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: prefix})})
	ten, err := good.CreateAccount(ctx, "Half Way", "HALF@way.example", "correct horse battery")
	if err != nil || ten.SubDomain != "half-way" {
		t.Fatalf("CreateAccount after the failure = %+v, %v", ten, err)
	}
}

func TestPublicCannotConnect(t *testing.T) {
	t.Parallel()
	role := newRole(t, "LOGIN")
	e := newTenantEnv(t)
	ten := e.createAccount(t, "Private", "p@private.example")

	u := testkit.DatabaseURL(t, testkit.PostgresURL(), ten.DBName)
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = role
	ctx := testkit.Context(t, 10*time.Second)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		_ = conn.Close(ctx)
		t.Fatal("a role without grants connected to a tenant database")
	}
	if code := pgCodeOf(err); code != "42501" {
		t.Errorf("connect as %s: %v (SQLSTATE %q), want permission denied (42501)", role, err, code)
	}
}

func TestProvisionerConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		urls   []string
		prefix string
		want   string
	}{
		{nil, "", "no database url"},
		{[]string{"postgres://u:s3cret@[::1"}, "", "postgres://u:xxxxx@"},
		{[]string{"postgres://h1:5432/postgres", "postgres://h1:5432/other"}, "", "listed twice"},
		{[]string{"postgres://h1/postgres"}, "Bad-Prefix", "prefix"},
	} {
		_, err := tenants.NewProvisioner(tenants.ProvisionerConfig{ServerURLs: c.urls, DBPrefix: c.prefix})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("NewProvisioner(%q, %q) = %v, want an error with %q and no password", c.urls, c.prefix, err, c.want)
		}
	}

	p, err := tenants.NewProvisioner(tenants.ProvisionerConfig{
		ServerURLs: []string{"postgres://tms:s3cret@127.0.0.1:1/postgres?connect_timeout=2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Ping(testkit.Context(t, 10*time.Second))
	if err == nil || !errors.Is(err, tenants.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") ||
		strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Ping of a closed port = %v, want ErrUnavailable naming 127.0.0.1:1 without the password", err)
	}
	if err := tenantstest.NewProvisioner(t, tenants.ProvisionerConfig{DBPrefix: "tms_"}).Ping(testkit.Context(t, 10*time.Second)); err != nil {
		t.Errorf("Ping of the test server: %v", err)
	}
}
