package tenants

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Tenant is the query model of one tenant (never the password hash).
type Tenant struct {
	ID, Name, Email, SubDomain string
	DBServer, DBName           string // placement
	CreatedAt                  time.Time
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	JS          jetstream.JetStream
	Provisioner *Provisioner
	Logger      *slog.Logger
	Now         func() time.Time // nil: time.Now
	Replicas    int              // KV replicas, 0 -> 1
}

// Registry is the tenant registry.
type Registry struct{}

// NewRegistry creates or updates the bucket.
func NewRegistry(ctx context.Context, cfg RegistryConfig) (*Registry, error) {
	return nil, errors.New("todo")
}

// Run feeds the query model.
func (r *Registry) Run(ctx context.Context) error { return nil }

// Ready reports whether the first snapshot is loaded.
func (r *Registry) Ready() bool { return false }

// CreateAccount creates a tenant.
func (r *Registry) CreateAccount(ctx context.Context, name, email, password string) (Tenant, error) {
	return Tenant{}, errors.New("todo")
}

// Get returns a tenant.
func (r *Registry) Get(ctx context.Context, id string) (Tenant, error) {
	return Tenant{}, ErrTenantNotFound
}

// Authenticate checks a password.
func (r *Registry) Authenticate(ctx context.Context, id, password string) (Tenant, error) {
	return Tenant{}, ErrInvalidCredentials
}

// Len is the number of tenants in the query model.
func (r *Registry) Len() int { return 0 }
