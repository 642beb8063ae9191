package tenants

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// Agents manages service agents.
type Agents struct{}

// NewAgents creates the bucket.
func NewAgents(ctx context.Context, cfg AgentsConfig) (*Agents, error) { return nil, errors.New("todo") }

// Create creates an agent.
func (a *Agents) Create(ctx context.Context, t Tenant, name string) (Agent, error) {
	return Agent{}, errors.New("todo")
}

// SetStatus sets the status.
func (a *Agents) SetStatus(ctx context.Context, t Tenant, agentID, status string) (Agent, error) {
	return Agent{}, errors.New("todo")
}

// List lists agents.
func (a *Agents) List(ctx context.Context, t Tenant) ([]Agent, error) { return nil, errors.New("todo") }
