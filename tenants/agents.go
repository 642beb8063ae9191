package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
)

// Agent is one service agent as the API shows it.
type Agent struct {
	ID, Name, Status     string // Status: subjects.AgentAvailable / AgentUnavailable
	AvailableSince       *time.Time
	CreatedAt, UpdatedAt time.Time
}

// AgentsConfig configures Agents.
type AgentsConfig struct {
	Pools    *Pools
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Now      func() time.Time
	Replicas int
}

// Agents keeps each tenant's service agents in the tenant's database (the
// source) and mirrors them to the KV bucket subjects.BucketAgents, which the
// ETA responders read instead of Postgres.
//
// Each write runs the KV put inside the open database transaction and
// commits after it: a failed put rolls the row back, so the two never
// disagree silently. What remains is a process crash (or a failed commit)
// after the put and before the commit: KV then shows a change the
// database lacks. A failed commit is compensated by restoring the previous
// KV value; a crash is not, until the next SetStatus of that agent
// rewrites its record.
//
// Agents also remembers, per tenant, the highest KV revision of an agent
// write it knows of (Revision): its own writes at once, and, while Run
// runs, every write of the bucket once its watch delivers it. The ingress
// sends it with each ETA request so that the responders answer from a
// calendar that has applied the tenant's last agent change
// (read-your-writes).
type Agents struct {
	pools *Pools
	kv    jetstream.KeyValue
	nc    *nats.Conn
	log   *slog.Logger
	now   func() time.Time
	revs  *revisions
}

// NewAgents creates or updates the bucket subjects.BucketAgents.
func NewAgents(ctx context.Context, cfg AgentsConfig) (*Agents, error) {
	if cfg.Pools == nil {
		return nil, errors.New("agents: nil Pools")
	}
	kv, err := openBucket(ctx, cfg.JS, subjects.AgentsBucketConfig(cfg.Replicas))
	if err != nil {
		return nil, err
	}
	return &Agents{pools: cfg.Pools, kv: kv, nc: cfg.JS.Conn(), now: orNow(cfg.Now),
		log: orDiscard(cfg.Logger).With(slog.String("component", "agents")), revs: newRevisions()}, nil
}

// Revision is the highest revision in subjects.BucketAgents of an agent
// write of tenant that this process knows of (0: none). It may be that of
// a later write of another tenant (see revisions), never an earlier one
// than the tenant's last write made here, or delivered by Run's watch.
func (a *Agents) Revision(tenant string) uint64 { return a.revs.get(tenant) }

// Run keeps Revision fed with the agent writes of every process (another
// ingress included) from a watch of the bucket, until ctx is done. A write
// made through another process counts from when the watch delivers it,
// usually milliseconds after its commit; until then a request here may
// still be answered from before it.
func (a *Agents) Run(ctx context.Context) error {
	note := func(e jetstream.KeyValueEntry) {
		// Deletes and purges too: they are agent changes of the tenant.
		if tenant, _, err := subjects.ParseAgentKey(e.Key()); err == nil {
			a.revs.note(tenant, e.Revision())
		}
	}
	feed := jskit.KVFeed{KV: a.kv, NC: a.nc, Logger: a.log,
		Snapshot: func(entries []jetstream.KeyValueEntry) {
			for _, e := range entries {
				note(e)
			}
		},
		Update: note,
	}
	feed.Run(ctx)
	return nil
}

// revisionSlots is the size of the revision table: fixed, so that its
// memory (128 KiB) does not grow with the tenant count or with keys a
// hostile writer of the bucket makes up.
const revisionSlots = 1 << 14

// revisions is a table of the highest agent-write revision per tenant,
// kept in a slot picked by hashing the tenant id. Tenants whose ids share
// a slot see the highest revision of them all: a request may then wait
// for a responder to reach a later revision than it needs, which exists
// and arrives as fast, but never carries an earlier one than its own.
type revisions struct {
	seed  maphash.Seed
	slots [revisionSlots]atomic.Uint64
}

func newRevisions() *revisions { return &revisions{seed: maphash.MakeSeed()} }

func (r *revisions) slot(tenant string) *atomic.Uint64 {
	return &r.slots[maphash.String(r.seed, tenant)%revisionSlots]
}

// note raises tenant's revision to rev; revisions never go down.
func (r *revisions) note(tenant string, rev uint64) {
	s := r.slot(tenant)
	for {
		cur := s.Load()
		if rev <= cur || s.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func (r *revisions) get(tenant string) uint64 { return r.slot(tenant).Load() }

const agentColumns = `id, name, status::text, available_since, created_at, updated_at`

func scanAgent(row pgx.Row) (Agent, error) {
	var a Agent
	err := row.Scan(&a.ID, &a.Name, &a.Status, &a.AvailableSince, &a.CreatedAt, &a.UpdatedAt)
	if a.AvailableSince != nil {
		u := a.AvailableSince.UTC()
		a.AvailableSince = &u
	}
	a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
	return a, err
}

// timestamp is now as tms records instants (subjects.Stamp).
func (a *Agents) timestamp() time.Time { return subjects.Stamp(a.now()) }

// Create adds an agent to t's database, available from now.
func (a *Agents) Create(ctx context.Context, t Tenant, name string) (Agent, error) {
	name, err := validateAgentName(name)
	if err != nil {
		return Agent{}, err
	}
	if subjects.ValidID(t.ID) != nil {
		return Agent{}, ErrTenantNotFound
	}
	now := a.timestamp()
	ag := Agent{ID: subjects.NewAgentID(), Name: name, Status: subjects.AgentAvailable, AvailableSince: &now,
		CreatedAt: now, UpdatedAt: now}
	err = a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		return inTx(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO service_agents (id, name, status, available_since, created_at, updated_at)
				VALUES ($1, $2, $3::sa_status, $4, $5, $6)`,
				ag.ID, ag.Name, ag.Status, ag.AvailableSince, ag.CreatedAt, ag.UpdatedAt); err != nil {
				return pgErr("inserting agent", err)
			}
			return a.publishInTx(ctx, tx, t.ID, ag, nil)
		})
	})
	if err != nil {
		return Agent{}, fmt.Errorf("create agent for tenant %s: %w", t.ID, err)
	}
	a.log.Info("agent created", slog.String("tenant", t.ID), slog.String("agent", ag.ID))
	return ag, nil
}

// SetStatus sets an agent's status. Becoming available sets
// available_since to now; becoming unavailable clears it; repeating the
// current status keeps it (and re-publishes the KV record).
func (a *Agents) SetStatus(ctx context.Context, t Tenant, agentID, status string) (Agent, error) {
	if status != subjects.AgentAvailable && status != subjects.AgentUnavailable {
		return Agent{}, &FieldError{Field: "agent_status", Reason: "must be available or unavailable"}
	}
	if subjects.ValidID(agentID) != nil {
		return Agent{}, ErrAgentNotFound
	}
	if subjects.ValidID(t.ID) != nil {
		return Agent{}, ErrTenantNotFound
	}
	now := a.timestamp()
	var ag Agent
	err := a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		return inTx(ctx, conn, func(tx pgx.Tx) error {
			old, err := scanAgent(tx.QueryRow(ctx, `SELECT `+agentColumns+` FROM service_agents WHERE id = $1 FOR UPDATE`,
				agentID))
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrAgentNotFound
			}
			if err != nil {
				return pgErr("reading agent", err)
			}
			ag = old
			ag.Status, ag.UpdatedAt = status, now
			switch {
			case status == old.Status:
			case status == subjects.AgentAvailable:
				ag.AvailableSince = &now
			default:
				ag.AvailableSince = nil
			}
			if _, err := tx.Exec(ctx, `UPDATE service_agents
				SET status = $2::sa_status, available_since = $3, updated_at = $4 WHERE id = $1`,
				ag.ID, ag.Status, ag.AvailableSince, ag.UpdatedAt); err != nil {
				return pgErr("updating agent", err)
			}
			return a.publishInTx(ctx, tx, t.ID, ag, &old)
		})
	})
	if err != nil {
		if errors.Is(err, ErrAgentNotFound) {
			return Agent{}, ErrAgentNotFound
		}
		return Agent{}, fmt.Errorf("set status of agent %s of tenant %s: %w", agentID, t.ID, err)
	}
	a.log.Info("agent status set", slog.String("tenant", t.ID), slog.String("agent", ag.ID),
		slog.String("status", ag.Status))
	return ag, nil
}

// inTx runs fn in a transaction that fn commits itself (publishInTx);
// any way out without a commit rolls back.
func inTx(ctx context.Context, conn *pgxpool.Conn, fn func(tx pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return pgErr("beginning transaction", err)
	}
	defer func() {
		rctx, cancel := cleanupContext(ctx)
		defer cancel()
		_ = tx.Rollback(rctx) // after a commit: ErrTxClosed, ignored
	}()
	return fn(tx)
}

// publishInTx puts the agent's KV record while tx is open and arranges,
// through the commit, that a failed commit restores the previous record
// (prev nil: removes it). Each put's revision is noted for Revision
// before the caller answers; a purge's, which the library does not
// return, once Run's watch delivers it.
func (a *Agents) publishInTx(ctx context.Context, tx pgx.Tx, tenant string, ag Agent, prev *Agent) error {
	key := subjects.AgentKey(tenant, ag.ID)
	rev, err := a.put(ctx, key, tenant, ag)
	if err != nil {
		return err
	}
	a.revs.note(tenant, rev)
	if err := tx.Commit(ctx); err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		var uerr error
		if prev == nil {
			uerr = a.kv.Purge(cctx, key)
		} else if rev, uerr = a.put(cctx, key, tenant, *prev); uerr == nil {
			a.revs.note(tenant, rev)
		}
		if uerr != nil {
			a.log.Error("agent record in KV disagrees with the database after a failed commit",
				slog.String("tenant", tenant), slog.String("agent", ag.ID), slog.Any("err", uerr))
		}
		return pgErr("committing agent", err)
	}
	return nil
}

// put writes the agent's record and returns its revision.
func (a *Agents) put(ctx context.Context, key, tenant string, ag Agent) (uint64, error) {
	body, err := json.Marshal(subjects.AgentRecord{Tenant: tenant, ID: ag.ID, Name: ag.Name, Status: ag.Status,
		AvailableSince: ag.AvailableSince, UpdatedAt: ag.UpdatedAt})
	if err != nil {
		return 0, err
	}
	kctx, cancel := kvContext(ctx)
	defer cancel()
	rev, err := a.kv.Put(kctx, key, body)
	if err != nil {
		return 0, natsErr("publishing agent "+ag.ID, err)
	}
	return rev, nil
}

// List returns t's agents, oldest first, from the tenant's database.
func (a *Agents) List(ctx context.Context, t Tenant) ([]Agent, error) {
	if subjects.ValidID(t.ID) != nil {
		return nil, ErrTenantNotFound
	}
	agents := []Agent{}
	err := a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+agentColumns+` FROM service_agents ORDER BY created_at, id`)
		if err != nil {
			return pgErr("listing agents", err)
		}
		defer rows.Close()
		for rows.Next() {
			ag, err := scanAgent(rows)
			if err != nil {
				return pgErr("listing agents", err)
			}
			agents = append(agents, ag)
		}
		if err := rows.Err(); err != nil {
			return pgErr("listing agents", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list agents of tenant %s: %w", t.ID, err)
	}
	return agents, nil
}

// Get reads one of t's agents from the tenant's database. An id no agent
// can have, or an agent that is not t's, is ErrAgentNotFound: each
// tenant's agents live in its own database, so another tenant's is never
// found here.
func (a *Agents) Get(ctx context.Context, t Tenant, agentID string) (Agent, error) {
	if subjects.ValidID(agentID) != nil {
		return Agent{}, ErrAgentNotFound
	}
	if subjects.ValidID(t.ID) != nil {
		return Agent{}, ErrTenantNotFound
	}
	var ag Agent
	err := a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		var err error
		ag, err = scanAgent(conn.QueryRow(ctx, `SELECT `+agentColumns+` FROM service_agents WHERE id = $1`, agentID))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrAgentNotFound
		}
		if err != nil {
			return pgErr("reading agent", err)
		}
		return nil
	})
	if errors.Is(err, ErrAgentNotFound) {
		return Agent{}, ErrAgentNotFound
	}
	if err != nil {
		return Agent{}, fmt.Errorf("get agent %s of tenant %s: %w", agentID, t.ID, err)
	}
	return ag, nil
}

// MaxAllocatedLookup bounds how many ticket ids one Allocated call reads:
// an agent's schedule is at most eight hours of minutes.
const MaxAllocatedLookup = 8 * 60

// Allocated reports which of ids an allocator has written into t's
// database as allocated (not cancelled): one query, so an agent's
// schedule can tell allocated tickets from those only accepted so far.
// More than MaxAllocatedLookup ids is refused.
func (a *Agents) Allocated(ctx context.Context, t Tenant, ids []string) (map[string]bool, error) {
	if len(ids) > MaxAllocatedLookup {
		return nil, fmt.Errorf("allocated: %d ticket ids, at most %d", len(ids), MaxAllocatedLookup)
	}
	if subjects.ValidID(t.ID) != nil {
		return nil, ErrTenantNotFound
	}
	out := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	err := a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id FROM tickets WHERE id = ANY($1) AND status = 'allocated'`, ids)
		if err != nil {
			return pgErr("reading allocated tickets", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return pgErr("reading allocated tickets", err)
			}
			out[id] = true
		}
		if err := rows.Err(); err != nil {
			return pgErr("reading allocated tickets", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("allocated tickets of tenant %s: %w", t.ID, err)
	}
	return out, nil
}
