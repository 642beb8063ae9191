package testkit

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresURL is the developer and CI server (docs/design.md,
// "Components and how they start"); TMS_TEST_DATABASE_URL overrides it.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// PostgresURL is the admin URL of the test Postgres server.
func PostgresURL() string {
	if u := os.Getenv("TMS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// AdminConn opens a superuser connection to the maintenance database,
// closed when the test ends. A server that cannot be reached fails the test
// with what to do: tests never skip for want of Postgres.
func AdminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatalf("connect to test Postgres %s (start it, or set TMS_TEST_DATABASE_URL): %v", PostgresURL(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// DatabasePrefix returns a database-name prefix unique to this test and
// registers a cleanup that drops every database whose name starts with it:
// hand it to code that creates databases (tenant provisioning).
func DatabasePrefix(t testing.TB) string {
	t.Helper()
	prefix := "tmst_" + RandomSuffix(8) + "_"
	admin := AdminConn(t)
	t.Cleanup(func() { DropDatabases(t, admin, prefix) })
	return prefix
}

// DropDatabases drops every database whose name starts with prefix,
// disconnecting its sessions first. Each drop has its own deadline, and
// one that fails is tried once more on a new connection: DROP DATABASE
// waits for a checkpoint, which on a loaded machine can take long. A
// database still left is logged, not failed: its name is unique, so it
// troubles no other test, and a cleanup that lags under load says nothing
// about the code under test.
func DropDatabases(t testing.TB, admin *pgx.Conn, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, prefix)
	if err != nil {
		t.Logf("list test databases %s*: %v; any are left behind", prefix, err)
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Logf("list test databases %s*: %v; any are left behind", prefix, err)
		return
	}
	for _, name := range names {
		err := dropDatabase(admin, name)
		if err != nil {
			err = dropDatabase(nil, name)
		}
		if err != nil {
			t.Logf("test database %s left behind: %v", name, err)
		}
	}
}

// dropTimeout bounds one DROP DATABASE of a test's cleanup.
const dropTimeout = 2 * time.Minute

// dropDatabase drops one database over conn, or over a connection of its
// own when conn is nil.
func dropDatabase(conn *pgx.Conn, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	if conn == nil {
		c, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(ctx))
		conn = c
	}
	_, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// NewDatabase creates an empty, uniquely named database, dropped when the
// test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	prefix := DatabasePrefix(t)
	name := prefix + sanitize(t.Name())
	admin := AdminConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	return DatabaseURL(t, PostgresURL(), name)
}

// DatabaseURL returns serverURL with its database replaced by name.
func DatabaseURL(t testing.TB, serverURL, name string) string {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("parse %s: %v", serverURL, err)
	}
	u.Path = "/" + strings.TrimPrefix(name, "/")
	return u.String()
}

// RefuseConnections makes database name refuse new connections and ends
// its open sessions, as an outage of that database would; the returned
// restore (also run at cleanup) lets connections in again.
func RefuseConnections(t testing.TB, name string) (restore func()) {
	t.Helper()
	admin := AdminConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS false`); err != nil {
		t.Fatalf("refuse connections to %s: %v", name, err)
	}
	restore = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS true`); err != nil {
			t.Errorf("allow connections to %s again: %v", name, err)
		}
	}
	t.Cleanup(restore)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
		t.Fatalf("end sessions of %s: %v", name, err)
	}
	return restore
}

// RefusedServer is the test server under names it refuses: a URL whose
// role does not exist and one whose database does not exist, with the
// server's reason for each, for tests of how a refusal is reported.
type RefusedServer struct {
	NoRole, NoRoleReason         string
	NoDatabase, NoDatabaseReason string
}

// Refused returns fresh, never-created role and database names on the
// test server as URLs.
func Refused(t testing.TB) RefusedServer {
	t.Helper()
	u, err := url.Parse(PostgresURL())
	if err != nil {
		t.Fatalf("parsing %s: %v", PostgresURL(), err)
	}
	role := "tmst_nosuch_" + RandomSuffix(8)
	db := "tmst_nosuch_" + RandomSuffix(8)
	u.User = url.User(role)
	return RefusedServer{
		NoRole: u.String(), NoRoleReason: `role "` + role + `" does not exist`,
		NoDatabase: DatabaseURL(t, PostgresURL(), db), NoDatabaseReason: `database "` + db + `" does not exist`,
	}
}
