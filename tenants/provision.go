package tenants

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
)

// ProvisionerConfig configures a Provisioner.
type ProvisionerConfig struct {
	ServerURLs []string // --database-url split on commas; each URL's database is the maintenance database
	DBPrefix   string   // tenant database name prefix; "" -> "tms_"
	Migrations fs.FS    // nil -> the embedded migrations
	Logger     *slog.Logger
}

// Provisioner creates tenant databases.
type Provisioner struct{}

// NewProvisioner parses the URLs.
func NewProvisioner(cfg ProvisionerConfig) (*Provisioner, error) { return nil, errors.New("todo") }

// Ping checks every server.
func (p *Provisioner) Ping(ctx context.Context) error { return errors.New("todo") }

// Provision creates a tenant database.
func (p *Provisioner) Provision(ctx context.Context, tenantID string) (server, dbName string, err error) {
	return "", "", errors.New("todo")
}

// Drop drops a tenant database.
func (p *Provisioner) Drop(ctx context.Context, server, dbName string) error { return errors.New("todo") }

// Close releases the provisioner.
func (p *Provisioner) Close() {}
