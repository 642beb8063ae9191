package tenants

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SessionsConfig configures Sessions.
type SessionsConfig struct {
	JS       jetstream.JetStream
	Logger   *slog.Logger
	Now      func() time.Time
	TTL      time.Duration // 0 -> 24h
	Replicas int
}

// Sessions holds login sessions.
type Sessions struct{}

// NewSessions creates or updates the bucket.
func NewSessions(ctx context.Context, cfg SessionsConfig) (*Sessions, error) {
	return nil, errors.New("todo")
}

// Run feeds the cache.
func (s *Sessions) Run(ctx context.Context) error { return nil }

// Ready reports the first snapshot.
func (s *Sessions) Ready() bool { return false }

// Issue issues a token.
func (s *Sessions) Issue(ctx context.Context, tenantID string) (token string, expiresAt time.Time, err error) {
	return "", time.Time{}, errors.New("todo")
}

// Authenticate resolves a token.
func (s *Sessions) Authenticate(ctx context.Context, token string) (tenantID string, err error) {
	return "", ErrUnauthenticated
}

// Revoke revokes a token.
func (s *Sessions) Revoke(ctx context.Context, token string) error { return errors.New("todo") }
