package tenants

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tms/subjects"
)

// ProvisionerConfig configures a Provisioner.
type ProvisionerConfig struct {
	ServerURLs []string // --database-url split on commas; each URL's database is the maintenance database
	DBPrefix   string   // tenant database name prefix; "" -> "tms_"
	Migrations fs.FS    // nil -> the embedded migrations (tests inject a broken set)
	Logger     *slog.Logger
}

// DefaultDBPrefix prefixes every tenant database name.
const DefaultDBPrefix = "tms_"

// provisionTimeout bounds one Provision or Drop whose caller set no
// deadline; connectTimeout bounds each connection attempt.
const (
	provisionTimeout = 2 * time.Minute
	connectTimeout   = 10 * time.Second
)

var validPrefix = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// dbServer is one configured Postgres server.
type dbServer struct {
	key    string // host:port, recorded in the registry as the placement
	url    string // as configured, with the maintenance database
	masked string // url with the password masked, for messages
	cfg    *pgx.ConnConfig
}

// Provisioner creates, migrates and drops tenant databases on the
// configured servers, and knows how to reach them.
type Provisioner struct {
	servers    []*dbServer
	byKey      map[string]*dbServer
	prefix     string
	migrations []migration
	log        *slog.Logger

	mu     sync.Mutex
	closed bool
	active sync.WaitGroup
}

// NewProvisioner parses the server URLs; an error names the bad one (with
// its password masked). It does not connect: see Ping.
func NewProvisioner(cfg ProvisionerConfig) (*Provisioner, error) {
	prefix := cfg.DBPrefix
	if prefix == "" {
		prefix = DefaultDBPrefix
	}
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("database prefix %q: want a lower-case letter, then up to 31 of [a-z0-9_]", prefix)
	}
	migs := cfg.Migrations
	if migs == nil {
		migs = defaultMigrations()
	}
	ms, err := loadMigrations(migs)
	if err != nil {
		return nil, err
	}
	p := &Provisioner{byKey: map[string]*dbServer{}, prefix: prefix, migrations: ms,
		log: orDiscard(cfg.Logger).With(slog.String("component", "provisioner"))}
	for _, raw := range cfg.ServerURLs {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		masked := maskURL(raw)
		cc, err := pgx.ParseConfig(raw)
		if err != nil {
			// pgx errors may quote the string they could not parse.
			return nil, fmt.Errorf("database url %s: cannot parse it", masked)
		}
		if cc.ConnectTimeout <= 0 {
			cc.ConnectTimeout = connectTimeout
		}
		key := net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))
		if _, dup := p.byKey[key]; dup {
			return nil, fmt.Errorf("database url %s: server %s is listed twice", masked, key)
		}
		s := &dbServer{key: key, url: raw, masked: masked, cfg: cc}
		p.servers = append(p.servers, s)
		p.byKey[key] = s
	}
	if len(p.servers) == 0 {
		return nil, errors.New("no database url given")
	}
	return p, nil
}

// maskURL hides the password of a URL or keyword/value connection string.
func maskURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	// Unparseable: mask whatever looks like a password anyway.
	s = passwordURL.ReplaceAllString(s, "${1}xxxxx@")
	return passwordKV.ReplaceAllString(s, "password=xxxxx")
}

var (
	passwordURL = regexp.MustCompile(`(://[^:/@]*:)[^@]*@`)
	passwordKV  = regexp.MustCompile(`password\s*=\s*('(\\'|[^'])*'|\S*)`)
)

// Servers returns the placement keys (host:port) of the configured
// servers, in the configured order.
func (p *Provisioner) Servers() []string {
	keys := make([]string, len(p.servers))
	for i, s := range p.servers {
		keys[i] = s.key
	}
	return keys
}

// begin registers an operation so Close can wait for it.
func (p *Provisioner) begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("provisioner closed")
	}
	p.active.Add(1)
	return nil
}

// Close refuses new operations and waits for running ones.
func (p *Provisioner) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.active.Wait()
}

func (p *Provisioner) connect(ctx context.Context, s *dbServer, dbName string) (*pgx.Conn, error) {
	cfg := s.cfg.Copy()
	if dbName != "" {
		cfg.Database = dbName
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, pgErr(fmt.Sprintf("postgres server %s (%s)", s.key, s.masked), err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// Ping checks that every server accepts a connection; the error names
// each server that does not (password masked). A server that answers but
// refuses the role, password or database is ErrPostgresRefused, saying
// which; one that cannot be reached is ErrUnavailable.
func (p *Provisioner) Ping(ctx context.Context) error {
	var errs []error
	for _, s := range p.servers {
		err := func() error {
			ctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			conn, err := p.connect(ctx, s, "")
			if rerr := refusal(fmt.Sprintf("postgres server %s (%s)", s.key, s.masked), err); rerr != nil {
				return rerr
			}
			if err != nil {
				return err
			}
			defer closeConn(conn)
			if err := conn.Ping(ctx); err != nil {
				return pgErr(fmt.Sprintf("postgres server %s (%s)", s.key, s.masked), err)
			}
			return nil
		}()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DBName is the database name of a tenant.
func (p *Provisioner) dbName(tenantID string) (string, error) {
	if err := subjects.ValidID(tenantID); err != nil {
		return "", fmt.Errorf("tenant id: %w", err)
	}
	name := p.prefix + tenantID
	if len(name) > 63 { // NAMEDATALEN-1: longer names are silently cut
		return "", fmt.Errorf("tenant database name %s is longer than 63 bytes", name)
	}
	return name, nil
}

// Provision picks a server by the placement rule (doc.go), creates the
// tenant's database, revokes PUBLIC's access and applies the migrations.
// On any failure it drops the database it created.
func (p *Provisioner) Provision(ctx context.Context, tenantID string) (server, dbName string, err error) {
	dbName, err = p.dbName(tenantID)
	if err != nil {
		return "", "", err
	}
	if err := p.begin(); err != nil {
		return "", "", err
	}
	defer p.active.Done()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, provisionTimeout)
		defer cancel()
	}
	s, err := p.place(ctx)
	if err != nil {
		return "", "", err
	}
	log := p.log.With(slog.String("tenant", tenantID), slog.String("db_server", s.key), slog.String("db", dbName))

	if err := p.createDatabase(ctx, s, dbName); err != nil {
		return "", "", err
	}
	if err := p.setUp(ctx, s, dbName); err != nil {
		// DROP DATABASE waits for a checkpoint, which on a busy server
		// takes long: its own deadline, as long as a provisioning's, and
		// one more try on a new connection.
		for try := 1; ; try++ {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
			derr := p.drop(cctx, s, dbName)
			cancel()
			if derr == nil {
				break
			}
			if try == 2 {
				log.Error("dropping half-provisioned database failed", slog.Any("err", derr))
				break
			}
			log.Warn("dropping half-provisioned database failed; trying again", slog.Any("err", derr))
		}
		return "", "", err
	}
	log.Info("tenant database provisioned")
	return s.key, dbName, nil
}

func (p *Provisioner) createDatabase(ctx context.Context, s *dbServer, dbName string) error {
	conn, err := p.connect(ctx, s, "")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return pgErr("creating database "+dbName+" on "+s.key, err)
	}
	return nil
}

// setUp closes the new database to PUBLIC first, so it is never reachable
// by other roles, then migrates it.
func (p *Provisioner) setUp(ctx context.Context, s *dbServer, dbName string) error {
	conn, err := p.connect(ctx, s, dbName)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	ident := pgx.Identifier{dbName}.Sanitize()
	if _, err := conn.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+ident+" FROM PUBLIC"); err != nil {
		return pgErr("revoking PUBLIC access to "+dbName, err)
	}
	if _, err := conn.Exec(ctx, "REVOKE ALL ON SCHEMA public FROM PUBLIC"); err != nil {
		return pgErr("revoking PUBLIC access to schema public of "+dbName, err)
	}
	if err := migrate(ctx, conn, p.migrations); err != nil {
		return pgErr("migrating "+dbName, err)
	}
	return nil
}

// place applies the placement rule: the reachable server holding the
// fewest databases with our prefix, the first listed on a tie.
func (p *Provisioner) place(ctx context.Context) (*dbServer, error) {
	if len(p.servers) == 1 {
		return p.servers[0], nil
	}
	var best *dbServer
	bestN := 0
	var errs []error
	for _, s := range p.servers {
		n, err := p.countDatabases(ctx, s)
		if err != nil {
			p.log.Warn("server skipped for placement", slog.String("db_server", s.key), slog.Any("err", err))
			errs = append(errs, err)
			continue
		}
		if best == nil || n < bestN {
			best, bestN = s, n
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no database server reachable for a new tenant: %w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return best, nil
}

func (p *Provisioner) countDatabases(ctx context.Context, s *dbServer) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := p.connect(ctx, s, "")
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)`,
		p.prefix).Scan(&n); err != nil {
		return 0, pgErr("counting tenant databases on "+s.key, err)
	}
	return n, nil
}

// Drop drops a tenant database, ending its sessions. It refuses names
// without the tenant prefix, so it can never drop anything else.
func (p *Provisioner) Drop(ctx context.Context, server, dbName string) error {
	s, ok := p.byKey[server]
	if !ok {
		return fmt.Errorf("drop %s: server %s is not configured", dbName, server)
	}
	if err := p.begin(); err != nil {
		return err
	}
	defer p.active.Done()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, provisionTimeout)
		defer cancel()
	}
	return p.drop(ctx, s, dbName)
}

func (p *Provisioner) drop(ctx context.Context, s *dbServer, dbName string) error {
	if !strings.HasPrefix(dbName, p.prefix) || len(dbName) == len(p.prefix) {
		return fmt.Errorf("drop %s: not a tenant database (prefix %s)", dbName, p.prefix)
	}
	conn, err := p.connect(ctx, s, "")
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
		return pgErr("dropping database "+dbName+" on "+s.key, err)
	}
	return nil
}

// poolConfig is the pgxpool configuration for one tenant database.
func (p *Provisioner) poolConfig(server, dbName string) (*pgxpool.Config, error) {
	s, ok := p.byKey[server]
	if !ok {
		return nil, fmt.Errorf("tenant database %s is placed on %s, which is not among the configured database servers",
			dbName, server)
	}
	cfg, err := pgxpool.ParseConfig(s.url)
	if err != nil {
		return nil, fmt.Errorf("database url %s: cannot parse it", s.masked)
	}
	cfg.ConnConfig.Database = dbName
	if cfg.ConnConfig.ConnectTimeout <= 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	return cfg, nil
}
