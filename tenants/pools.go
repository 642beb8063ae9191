package tenants

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolsConfig configures Pools.
type PoolsConfig struct {
	Provisioner       *Provisioner
	ConnsPerTenant    int32         // 0 -> 2
	MaxConnsPerServer int           // 0 -> 20
	IdleTimeout       time.Duration // 0 -> 1m
	Logger            *slog.Logger
}

// PoolStats is a snapshot for metrics.
type PoolStats struct {
	OpenPools, OpenConns int
}

// Pools manages per-tenant pools.
type Pools struct{}

// NewPools returns a pool manager.
func NewPools(cfg PoolsConfig) *Pools { return &Pools{} }

// Run evicts idle pools.
func (p *Pools) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Do runs fn with a connection of t's database.
func (p *Pools) Do(ctx context.Context, t Tenant, fn func(ctx context.Context, conn *pgxpool.Conn) error) error {
	return errors.New("todo")
}

// Stats returns a snapshot.
func (p *Pools) Stats() PoolStats { return PoolStats{} }
