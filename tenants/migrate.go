package tenants

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var embeddedMigrations embed.FS

// defaultMigrations returns the tenant schema migrations embedded in the binary.
func defaultMigrations() fs.FS {
	sub, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}

type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)

// loadMigrations reads the *.sql files at the root of fsys, named
// NNNN_description.sql, in version order. Versions must be unique.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must look like 0001_description.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(body)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations found")
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrationsLock is the advisory lock (per database: Postgres scopes
// advisory locks to the current database) that serialises concurrent
// runners, several workers opening the same tenant database at once.
const migrationsLock = `SELECT pg_advisory_xact_lock(hashtext('tms.schema_migrations'))`

// migrate applies the migrations not yet recorded in schema_migrations,
// each file in its own transaction together with its record, so a failing
// file leaves the database at the previous version. The advisory lock
// serialises concurrent runners on one database, the creation of
// schema_migrations included (two concurrent CREATE TABLE IF NOT EXISTS
// can both try to create it).
func migrate(ctx context.Context, conn *pgx.Conn, ms []migration) error {
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrationsLock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		return err
	}); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range ms {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrationsLock); err != nil {
				return err
			}
			var applied bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`,
				m.version).Scan(&applied); err != nil {
				return err
			}
			if applied {
				return nil
			}
			// No arguments: pgx sends the file with the simple protocol,
			// which runs several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

// migrated reports whether every one of ms is recorded in the database's
// schema_migrations: one cheap read, so that a process can check each
// tenant database it opens without taking the migrations' lock.
func migrated(ctx context.Context, conn *pgx.Conn, ms []migration) (bool, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return false, err
	}
	if !exists {
		return false, nil
	}
	var n int
	versions := make([]int32, len(ms))
	for i, m := range ms {
		versions[i] = int32(m.version)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ANY($1)`,
		versions).Scan(&n); err != nil {
		return false, err
	}
	return n == len(ms), nil
}
