package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
)

// Tenant is the query model of one tenant (never the password hash).
type Tenant struct {
	ID, Name, Email, SubDomain string
	DBServer, DBName           string // placement
	CreatedAt                  time.Time
}

func tenantOf(r subjects.TenantRecord) Tenant {
	return Tenant{ID: r.ID, Name: r.Name, Email: r.Email, SubDomain: r.SubDomain,
		DBServer: r.DBServer, DBName: r.DBName, CreatedAt: r.CreatedAt}
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	JS          jetstream.JetStream
	Provisioner *Provisioner // needed by CreateAccount only
	Logger      *slog.Logger
	Now         func() time.Time // nil: time.Now
	Replicas    int              // KV replicas, 0 -> 1
}

// claimTTL bounds how long an e-mail or sub_domain claim of an account
// that was never finished (the process died half way) blocks others.
const claimTTL = 10 * time.Minute

// maxSubDomainProbes is how many of name, name-2, name-3 ... are tried
// before a random suffix is used, so a popular name costs a bounded
// number of round trips.
const maxSubDomainProbes = 20

// Registry is the tenant registry: the command side writes the KV bucket
// subjects.BucketTenants; the query side is an in-memory copy fed by a
// watch (Run).
type Registry struct {
	kv    jetstream.KeyValue
	prov  *Provisioner
	log   *slog.Logger
	now   func() time.Time
	cache *cache[subjects.TenantRecord]
}

// NewRegistry creates or updates the bucket subjects.BucketTenants.
func NewRegistry(ctx context.Context, cfg RegistryConfig) (*Registry, error) {
	kv, err := openBucket(ctx, cfg.JS, subjects.TenantsBucketConfig(cfg.Replicas))
	if err != nil {
		return nil, err
	}
	log := orDiscard(cfg.Logger).With(slog.String("component", "tenant_registry"))
	r := &Registry{kv: kv, prov: cfg.Provisioner, log: log, now: orNow(cfg.Now)}
	r.cache = &cache[subjects.TenantRecord]{
		kv: kv, filter: subjects.TenantKeys, nc: cfg.JS.Conn(), log: log, what: "tenant registry",
		id: func(key string) (string, bool) {
			id, err := subjects.ParseTenantKey(key)
			return id, err == nil
		},
		decode: func(b []byte) (subjects.TenantRecord, error) {
			var rec subjects.TenantRecord
			err := json.Unmarshal(b, &rec)
			return rec, err
		},
	}
	return r, nil
}

// Run feeds the in-memory query model from a watch until ctx is done;
// it re-watches and rebuilds after a broken watch or a reconnect.
func (r *Registry) Run(ctx context.Context) error { return r.cache.run(ctx) }

// Ready reports whether the first snapshot is loaded.
func (r *Registry) Ready() bool { return r.cache.ready.Load() }

// Started is closed once the first snapshot is loaded: Ready as a channel
// to wait on.
func (r *Registry) Started() <-chan struct{} { return r.cache.startedChan() }

// Len is the number of tenants in the query model.
func (r *Registry) Len() int { return r.cache.len() }

// CreateAccount validates the input, claims the e-mail (case-insensitive)
// and a unique sub_domain, provisions the tenant's database and writes the
// tenant record. It is all or nothing: on any failure the database is
// dropped and the claims are removed.
//
// The claims are first created with a TTL (claimTTL) and made permanent
// by a plain Update once the record is written, so a process that dies
// half way blocks the e-mail for at most claimTTL. A process that dies
// between writing the record and confirming the claims (two round trips)
// leaves a tenant whose claims expire; that window is accepted.
func (r *Registry) CreateAccount(ctx context.Context, name, email, password string) (Tenant, error) {
	name, email, err := validateAccount(name, email, password)
	if err != nil {
		return Tenant{}, err
	}
	if r.prov == nil {
		return Tenant{}, errors.New("create account: registry has no provisioner")
	}
	hash, err := hashPassword(password)
	if err != nil {
		return Tenant{}, err
	}
	id := subjects.NewTenantID()
	log := r.log.With(slog.String("tenant", id))
	claim, err := json.Marshal(subjects.Claim{Tenant: id})
	if err != nil {
		return Tenant{}, err
	}

	var undo []func(context.Context)
	fail := func(err error) (Tenant, error) {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
		log.Info("create account failed, undone", slog.Any("err", err))
		return Tenant{}, err
	}
	release := func(key string, rev *uint64) func(context.Context) {
		return func(ctx context.Context) {
			// Only our own revision: a claim that expired meanwhile may
			// belong to someone else now. The marker itself expires too.
			if err := r.kv.Purge(ctx, key, jetstream.LastRevision(*rev), jetstream.PurgeTTL(subjects.TenantsMarkerTTL)); err != nil {
				log.Error("releasing claim failed; it expires by itself unless it was confirmed",
					slog.String("key", key), slog.Any("err", err))
			}
		}
	}

	emailKey := subjects.EmailKey(email)
	emailRev, err := r.create(ctx, emailKey, claim, claimTTL)
	if jskit.CreateLost(err) {
		return Tenant{}, ErrEmailTaken
	}
	if err != nil {
		return Tenant{}, natsErr("claiming e-mail", err)
	}
	undo = append(undo, release(emailKey, &emailRev))

	sub, subKey, subRev, err := r.claimSubDomain(ctx, slug(name), claim)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, release(subKey, &subRev))

	server, dbName, err := r.prov.Provision(ctx, id)
	if err != nil {
		return fail(fmt.Errorf("create account: %w", err))
	}
	undo = append(undo, func(ctx context.Context) {
		// A drop waits for a checkpoint: Drop's own deadline, not the
		// shorter one of the other undos.
		if err := r.prov.Drop(context.WithoutCancel(ctx), server, dbName); err != nil {
			log.Error("dropping tenant database failed", slog.String("db", dbName), slog.Any("err", err))
		}
	})

	rec := subjects.TenantRecord{ID: id, Name: name, Email: email, PasswordHash: hash, SubDomain: sub,
		DBServer: server, DBName: dbName, CreatedAt: subjects.Stamp(r.now())}
	body, err := json.Marshal(rec)
	if err != nil {
		return fail(err)
	}
	tenantKey := subjects.TenantKey(id)
	recRev, err := r.create(ctx, tenantKey, body, 0)
	if err != nil {
		return fail(natsErr("writing tenant record", err))
	}
	undo = append(undo, release(tenantKey, &recRev))

	// Confirm: a plain Update drops the claim's TTL.
	for _, c := range []struct {
		key string
		rev *uint64
	}{{emailKey, &emailRev}, {subKey, &subRev}} {
		kctx, cancel := kvContext(ctx)
		rev, err := r.kv.Update(kctx, c.key, claim, *c.rev)
		cancel()
		if err != nil {
			return fail(natsErr("confirming claim "+c.key, err))
		}
		*c.rev = rev
	}
	r.cache.putLocal(id, rec, recRev)
	log.Info("account created", slog.String("sub_domain", sub), slog.String("db_server", server),
		slog.String("db", dbName))
	return tenantOf(rec), nil
}

func (r *Registry) create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	ctx, cancel := kvContext(ctx)
	defer cancel()
	if ttl > 0 {
		return r.kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
	}
	return r.kv.Create(ctx, key, value)
}

// claimSubDomain claims base, base-2, base-3 ... and, after
// maxSubDomainProbes taken ones, base-<random>.
func (r *Registry) claimSubDomain(ctx context.Context, base string, claim []byte) (sub, key string, rev uint64, err error) {
	for n := 1; ; n++ {
		sub = base
		switch {
		case n > maxSubDomainProbes:
			sub = withSuffix(base, subjects.NewID("", 6))
		case n > 1:
			sub = withSuffix(base, strconv.Itoa(n))
		}
		key = subjects.SubDomainKey(sub)
		rev, err = r.create(ctx, key, claim, claimTTL)
		if err == nil {
			return sub, key, rev, nil
		}
		if !jskit.CreateLost(err) {
			return "", "", 0, natsErr("claiming sub_domain", err)
		}
		if ctx.Err() != nil {
			return "", "", 0, natsErr("claiming sub_domain", ctx.Err())
		}
	}
}

// Get returns the tenant from the query model, or from KV when this
// process has not seen it yet (another process has just created it).
func (r *Registry) Get(ctx context.Context, id string) (Tenant, error) {
	rec, err := r.record(ctx, id)
	if err != nil {
		return Tenant{}, err
	}
	return tenantOf(rec), nil
}

func (r *Registry) record(ctx context.Context, id string) (subjects.TenantRecord, error) {
	if subjects.ValidID(id) != nil {
		return subjects.TenantRecord{}, ErrTenantNotFound
	}
	if rec, ok := r.cache.get(id); ok {
		return rec, nil
	}
	kctx, cancel := kvContext(ctx)
	defer cancel()
	e, err := r.kv.Get(kctx, subjects.TenantKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return subjects.TenantRecord{}, ErrTenantNotFound
	}
	if err != nil {
		return subjects.TenantRecord{}, natsErr("reading tenant "+id, err)
	}
	var rec subjects.TenantRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return subjects.TenantRecord{}, fmt.Errorf("decoding tenant %s: %w", id, err)
	}
	return rec, nil
}

// Authenticate checks a tenant's password. An unknown id and a wrong
// password both give ErrInvalidCredentials, after the same amount of
// hashing work.
func (r *Registry) Authenticate(ctx context.Context, id, password string) (Tenant, error) {
	rec, err := r.record(ctx, id)
	if errors.Is(err, ErrTenantNotFound) {
		_, _ = verifyPassword(dummyHash(), password)
		return Tenant{}, ErrInvalidCredentials
	}
	if err != nil {
		return Tenant{}, err
	}
	ok, err := verifyPassword(rec.PasswordHash, password)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenant %s: %w", id, err)
	}
	if !ok {
		return Tenant{}, ErrInvalidCredentials
	}
	return tenantOf(rec), nil
}
