package tenants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// SessionsConfig configures Sessions.
type SessionsConfig struct {
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Now      func() time.Time
	TTL      time.Duration // 0 -> 24h
	Replicas int
}

// tokenBytes is the entropy of a session token; encoded as unpadded
// base64url it is tokenLen characters.
const (
	tokenBytes = 32
	tokenLen   = 43
)

// Sessions holds login sessions in the KV bucket subjects.BucketSessions,
// keyed by the SHA-256 of the token (the token itself is never stored),
// each key with a per-key TTL equal to the session's lifetime. Every
// process keeps a watch-fed copy, so a revocation reaches all of them as
// fast as the watch delivers it.
type Sessions struct {
	kv    jetstream.KeyValue
	log   *slog.Logger
	now   func() time.Time
	ttl   time.Duration
	cache *cache[subjects.SessionRecord]
}

// NewSessions creates or updates the bucket subjects.BucketSessions.
func NewSessions(ctx context.Context, cfg SessionsConfig) (*Sessions, error) {
	ttl := cfg.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	kv, err := openBucket(ctx, cfg.JS, subjects.SessionsBucketConfig(cfg.Replicas))
	if err != nil {
		return nil, err
	}
	log := orDiscard(cfg.Logger).With(slog.String("component", "sessions"))
	s := &Sessions{kv: kv, log: log, now: orNow(cfg.Now), ttl: ttl}
	s.cache = &cache[subjects.SessionRecord]{
		kv: kv, filter: subjects.SessionKeys, nc: cfg.JS.Conn(), log: log, what: "sessions",
		id: func(key string) (string, bool) {
			hash, err := subjects.ParseSessionKey(key)
			return hash, err == nil
		},
		decode: func(b []byte) (subjects.SessionRecord, error) {
			var rec subjects.SessionRecord
			err := json.Unmarshal(b, &rec)
			return rec, err
		},
	}
	return s, nil
}

// Run feeds the in-memory session copy from a watch until ctx is done.
func (s *Sessions) Run(ctx context.Context) error { return s.cache.run(ctx) }

// Ready reports whether the first snapshot is loaded.
func (s *Sessions) Ready() bool { return s.cache.ready.Load() }

// Started is closed once the first snapshot is loaded: Ready as a channel
// to wait on.
func (s *Sessions) Started() <-chan struct{} { return s.cache.startedChan() }

// Issue starts a session for tenantID and returns its bearer token.
func (s *Sessions) Issue(ctx context.Context, tenantID string) (token string, expiresAt time.Time, err error) {
	if err := subjects.ValidID(tenantID); err != nil {
		return "", time.Time{}, fmt.Errorf("issue session: %w", err)
	}
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, fmt.Errorf("issue session: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(raw)
	hash := tokenHash(token)
	expiresAt = s.now().UTC().Add(s.ttl).Truncate(time.Second)
	rec := subjects.SessionRecord{Tenant: tenantID, ExpiresAt: expiresAt}
	body, err := json.Marshal(rec)
	if err != nil {
		return "", time.Time{}, err
	}
	// The KV TTL only collects the key; ExpiresAt (judged by s.now)
	// decides. Whole seconds, rounded up, as the server requires.
	keyTTL := (s.ttl + time.Second - 1).Truncate(time.Second)
	kctx, cancel := kvContext(ctx)
	defer cancel()
	rev, err := s.kv.Create(kctx, subjects.SessionKey(hash), body, jetstream.KeyTTL(keyTTL))
	if err != nil {
		return "", time.Time{}, natsErr("issue session", err)
	}
	s.cache.putLocal(hash, rec, rev)
	return token, expiresAt, nil
}

// Authenticate returns the tenant of a live session. A malformed, unknown,
// expired or revoked token is ErrUnauthenticated.
func (s *Sessions) Authenticate(ctx context.Context, token string) (tenantID string, err error) {
	hash, ok := checkToken(token)
	if !ok {
		return "", ErrUnauthenticated
	}
	rec, ok := s.cache.get(hash)
	if !ok {
		// Another process may have issued it a moment ago.
		kctx, cancel := kvContext(ctx)
		defer cancel()
		e, err := s.kv.Get(kctx, subjects.SessionKey(hash))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", ErrUnauthenticated
		}
		if err != nil {
			return "", natsErr("reading session", err)
		}
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			s.log.Warn("undecodable session record", slog.Any("err", err))
			return "", ErrUnauthenticated
		}
	}
	if !s.now().Before(rec.ExpiresAt) {
		return "", ErrUnauthenticated
	}
	return rec.Tenant, nil
}

// Revoke ends the session of token. Every process's watch drops it within
// milliseconds; this one at once. Revoking an unknown token succeeds.
func (s *Sessions) Revoke(ctx context.Context, token string) error {
	hash, ok := checkToken(token)
	if !ok {
		return ErrUnauthenticated
	}
	kctx, cancel := kvContext(ctx)
	defer cancel()
	// The purge marker itself goes away after subjects.SessionsMarkerTTL,
	// so revoked sessions leave nothing behind for long.
	if err := s.kv.Purge(kctx, subjects.SessionKey(hash), jetstream.PurgeTTL(subjects.SessionsMarkerTTL)); err != nil {
		return natsErr("revoke session", err)
	}
	s.cache.deleteLocal(hash)
	return nil
}

// checkToken validates the shape of a token and returns its hash. Nothing
// derived from an unchecked token reaches a key builder.
func checkToken(token string) (string, bool) {
	if len(token) != tokenLen {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != tokenBytes {
		return "", false
	}
	// Reject non-canonical encodings (stray bits in the last character),
	// so one session has exactly one token string.
	if base64.RawURLEncoding.EncodeToString(raw) != token {
		return "", false
	}
	return tokenHash(token), true
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
