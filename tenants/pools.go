package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolsConfig configures Pools.
type PoolsConfig struct {
	Provisioner       *Provisioner
	ConnsPerTenant    int32         // 0 -> 2
	MaxConnsPerServer int           // 0 -> 20: hard bound on open connections to one server
	IdleTimeout       time.Duration // 0 -> 1m: a tenant pool unused that long is closed
	Logger            *slog.Logger
}

// PoolStats is a snapshot of the pool manager, for metrics.
type PoolStats struct {
	OpenPools int // tenant pools currently open
	OpenConns int // connections open (or being opened) to all servers
}

// Pools gives each tenant a small pgx pool, created on first use and
// closed when idle, and bounds the connections open to each server (see
// doc.go).
type Pools struct {
	prov           *Provisioner
	connsPerTenant int32
	maxPerServer   int
	idle           time.Duration
	log            *slog.Logger

	mu    sync.Mutex
	pools map[string]*tenantPool // by server + "/" + database
	// current has the databases (by pool key) found or made current with
	// every migration this binary embeds, once per process: a pool closed
	// when idle does not check again.
	current map[string]bool
	servers map[string]*serverSlots
	closed  bool
	closers sync.WaitGroup // pools being closed in the background
}

// tenantPool is one tenant's pool. refs counts Do calls using it: a pool
// is closed only when refs is 0.
type tenantPool struct {
	key, server string
	pool        *pgxpool.Pool
	refs        int
	lastUsed    time.Time
}

// serverSlots is the connection budget of one server: one token per open
// socket, taken before dialing and given back when the socket is closed
// and the server has ended the backend.
type serverSlots struct {
	key     string
	tokens  chan struct{}
	kick    chan struct{} // a pool of this server became evictable
	waiters atomic.Int64  // dials waiting for a token
	freeing atomic.Int64  // connections being closed to make room
}

// NewPools returns a pool manager. Run it: it evicts idle pools and closes
// every pool when it stops.
func NewPools(cfg PoolsConfig) *Pools {
	p := &Pools{
		prov: cfg.Provisioner, connsPerTenant: cfg.ConnsPerTenant, maxPerServer: cfg.MaxConnsPerServer,
		idle: cfg.IdleTimeout, log: orDiscard(cfg.Logger).With(slog.String("component", "tenant_pools")),
		pools: map[string]*tenantPool{}, servers: map[string]*serverSlots{}, current: map[string]bool{},
	}
	if p.connsPerTenant <= 0 {
		p.connsPerTenant = 2
	}
	if p.maxPerServer <= 0 {
		p.maxPerServer = 20
	}
	if p.idle <= 0 {
		p.idle = time.Minute
	}
	return p
}

// Run closes pools unused for IdleTimeout until ctx is done, then closes
// every pool (waiting for running Do calls) and returns nil.
func (p *Pools) Run(ctx context.Context) error {
	tick := time.NewTicker(max(p.idle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.closeAll()
			return nil
		case <-tick.C:
			p.evictIdle(time.Now())
		}
	}
}

func (p *Pools) closeAll() {
	p.mu.Lock()
	p.closed = true
	all := make([]*tenantPool, 0, len(p.pools))
	for k, tp := range p.pools {
		all = append(all, tp)
		delete(p.pools, k)
	}
	p.mu.Unlock()
	for _, tp := range all {
		tp.pool.Close()
	}
	p.closers.Wait()
}

// evictIdle closes the pools nobody has used for the idle timeout.
func (p *Pools) evictIdle(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, tp := range p.pools {
		if tp.refs == 0 && now.Sub(tp.lastUsed) >= p.idle {
			delete(p.pools, k)
			p.closeLocked(tp, 0)
			p.log.Debug("idle tenant pool closed", slog.String("pool", k))
		}
	}
}

// closeLocked closes tp in the background; freeing connections are
// counted as on their way out meanwhile. p.mu must be held.
func (p *Pools) closeLocked(tp *tenantPool, freeing int64) {
	s := p.servers[tp.server]
	s.freeing.Add(freeing)
	p.closers.Add(1)
	go func() {
		defer p.closers.Done()
		tp.pool.Close()
		s.freeing.Add(-freeing)
	}()
}

// Stats returns the number of open pools and connections.
func (p *Pools) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PoolStats{OpenPools: len(p.pools)}
	for _, s := range p.servers {
		st.OpenConns += len(s.tokens)
	}
	return st
}

// Do runs fn with a connection to t's database. The connection goes back
// to the tenant's pool when fn returns; fn must not keep it.
// Connectivity failures are reported as ErrUnavailable.
//
// The first Do of a database in a process makes sure its schema has every
// migration this binary embeds, applying the missing ones (a database
// provisioned by an older version), before fn runs.
func (p *Pools) Do(ctx context.Context, t Tenant, fn func(ctx context.Context, conn *pgxpool.Conn) error) error {
	tp, err := p.acquirePool(t)
	if err != nil {
		return err
	}
	defer p.releasePool(tp)
	conn, err := tp.pool.Acquire(ctx)
	if err != nil {
		return pgErr(fmt.Sprintf("connecting to database %s of tenant %s", t.DBName, t.ID), err)
	}
	defer conn.Release()
	if err := p.migrateOnce(ctx, t, tp.key, conn); err != nil {
		return err
	}
	if err := fn(ctx, conn); err != nil {
		if pgUnavailable(err) && !errors.Is(err, ErrUnavailable) {
			return fmt.Errorf("tenant %s: %w: %w", t.ID, ErrUnavailable, err)
		}
		return err
	}
	return nil
}

// migrateOnce brings t's database (pool key) up to the embedded
// migrations, unless this process already did. Several processes may do
// it at once: migrate serialises them on the database's advisory lock, and
// each applies only what is not yet recorded.
func (p *Pools) migrateOnce(ctx context.Context, t Tenant, key string, conn *pgxpool.Conn) error {
	p.mu.Lock()
	done := p.current[key]
	p.mu.Unlock()
	if done {
		return nil
	}
	ms := p.prov.migrations
	ok, err := migrated(ctx, conn.Conn(), ms)
	if err != nil {
		return pgErr(fmt.Sprintf("reading the schema version of database %s of tenant %s", t.DBName, t.ID), err)
	}
	if !ok {
		if err := migrate(ctx, conn.Conn(), ms); err != nil {
			return pgErr(fmt.Sprintf("migrating database %s of tenant %s", t.DBName, t.ID), err)
		}
		p.log.Info("tenant database migrated", slog.String("tenant", t.ID), slog.String("db", t.DBName))
	}
	p.mu.Lock()
	p.current[key] = true
	p.mu.Unlock()
	return nil
}

func (p *Pools) acquirePool(t Tenant) (*tenantPool, error) {
	if p.prov == nil {
		return nil, errors.New("pools: no provisioner configured")
	}
	if t.DBServer == "" || t.DBName == "" {
		return nil, fmt.Errorf("tenant %s has no database placement", t.ID)
	}
	key := t.DBServer + "/" + t.DBName
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("tenant %s: %w: pools are shut down", t.ID, ErrUnavailable)
	}
	tp, ok := p.pools[key]
	if !ok {
		s := p.serverLocked(t.DBServer)
		cfg, err := p.prov.poolConfig(t.DBServer, t.DBName)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = p.connsPerTenant
		cfg.MinConns = 0
		cfg.MaxConnIdleTime = p.idle
		cfg.HealthCheckPeriod = max(p.idle/2, 100*time.Millisecond)
		// The token accounting below relies on every dial being a real
		// session: with the deadline handler (pgconn's default) a
		// cancelled context never dials a cancel request.
		cfg.ConnConfig.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
		}
		cfg.ConnConfig.DialFunc = p.dialer(s, cfg.ConnConfig.DialFunc)
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, fmt.Errorf("tenant %s pool: %w", t.ID, err)
		}
		tp = &tenantPool{key: key, server: t.DBServer, pool: pool}
		p.pools[key] = tp
	}
	tp.refs++
	tp.lastUsed = time.Now()
	return tp, nil
}

func (p *Pools) releasePool(tp *tenantPool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	tp.refs--
	tp.lastUsed = time.Now()
	if tp.refs == 0 {
		select {
		case p.servers[tp.server].kick <- struct{}{}:
		default:
		}
	}
}

func (p *Pools) serverLocked(key string) *serverSlots {
	s, ok := p.servers[key]
	if !ok {
		s = &serverSlots{key: key, tokens: make(chan struct{}, p.maxPerServer), kick: make(chan struct{}, 1)}
		p.servers[key] = s
	}
	return s
}

// dialer wraps a pool's dial so that every socket holds a token of its
// server for its whole life.
func (p *Pools) dialer(s *serverSlots, base pgconn.DialFunc) pgconn.DialFunc {
	if base == nil {
		d := &net.Dialer{KeepAlive: 5 * time.Minute}
		base = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := p.takeToken(ctx, s); err != nil {
			return nil, fmt.Errorf("waiting for a connection slot on %s: %w", s.key, err)
		}
		c, err := base(ctx, network, addr)
		if err != nil {
			<-s.tokens
			return nil, err
		}
		return &countedConn{Conn: c, release: func() { <-s.tokens }}, nil
	}
}

// takeToken takes a token of s, making room when there is none: first by
// closing the least recently used pool of s that no Do is using, else by
// closing one idle connection of a busy pool; then it waits for a token.
func (p *Pools) takeToken(ctx context.Context, s *serverSlots) error {
	select {
	case s.tokens <- struct{}{}:
		return nil
	default:
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	// Re-check now and then: a wake-up can be missed between the checks
	// below and the select.
	retry := time.NewTicker(50 * time.Millisecond)
	defer retry.Stop()
	for {
		if s.freeing.Load() < s.waiters.Load() {
			p.makeRoom(s)
		}
		select {
		case s.tokens <- struct{}{}:
			return nil
		case <-s.kick:
		case <-retry.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Pools) makeRoom(s *serverSlots) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var candidates []*tenantPool
	for _, tp := range p.pools {
		if tp.server == s.key {
			candidates = append(candidates, tp)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].lastUsed.Before(candidates[j].lastUsed) })
	for _, tp := range candidates {
		if n := tp.pool.Stat().TotalConns(); tp.refs == 0 && n > 0 {
			delete(p.pools, tp.key)
			p.closeLocked(tp, int64(n))
			p.log.Debug("tenant pool closed to make room", slog.String("pool", tp.key), slog.String("db_server", s.key))
			return
		}
	}
	for _, tp := range candidates {
		if tp.pool.Stat().IdleConns() == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		idle := tp.pool.AcquireAllIdle(ctx)
		cancel()
		if len(idle) == 0 {
			continue
		}
		victim := idle[0]
		for _, c := range idle[1:] {
			c.Release()
		}
		s.freeing.Add(1)
		p.closers.Add(1)
		go func() {
			defer p.closers.Done()
			defer s.freeing.Add(-1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = victim.Conn().Close(ctx)
			victim.Release() // a closed connection is destroyed, not pooled
		}()
		return
	}
}

// countedConn gives its server token back once, when the socket is closed
// and the server has ended the session: Postgres counts a backend until it
// exits, so handing the token on at our close alone could let a new
// connection in while the old backend still counts.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	var err error
	c.once.Do(func() {
		// After Terminate the server closes its end when the backend
		// has left the process table; wait (bounded) for that EOF.
		_ = c.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var buf [512]byte
		for {
			if _, rerr := c.Conn.Read(buf[:]); rerr != nil {
				break
			}
		}
		err = c.Conn.Close()
		c.release()
	})
	return err
}
