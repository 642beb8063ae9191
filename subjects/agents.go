package subjects

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketAgents holds each tenant's service agents and their
// availability, so ETA responders never read Postgres on the hot path.
const BucketAgents = "TMS_AGENTS"

// AgentsBucketConfig is the configuration of BucketAgents: package
// tenants writes it, the ETA responders read it, and whichever starts
// first creates it.
func AgentsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketAgents,
		Description: "tms service agents and their availability, per tenant",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
	}
}

// NewAgentID is a new agent id: "a" and RandomIDChars random characters.
func NewAgentID() string { return NewID("a", RandomIDChars) }

// AgentKey is the agents-bucket key of one agent of one tenant.
func AgentKey(tenant, agent string) string { return mustID(tenant) + "." + mustID(agent) }

// TenantAgents is the watch filter that matches every agent of a tenant.
func TenantAgents(tenant string) string { return mustID(tenant) + ".*" }

// ParseAgentKey is AgentKey's inverse, for a key read back from the bucket
// (anyone with access may write one: validate before use). A key AgentKey
// cannot have produced is ErrInvalidID.
func ParseAgentKey(key string) (tenant, agent string, err error) {
	tenant, agent, ok := strings.Cut(key, ".")
	if !ok || ValidID(tenant) != nil || ValidID(agent) != nil {
		return "", "", fmt.Errorf("%w: key %q is not tenant.agent", ErrInvalidID, key)
	}
	return tenant, agent, nil
}

// Agent statuses, as stored and as shown in the API.
const (
	AgentAvailable   = "available"
	AgentUnavailable = "unavailable"
)

// AgentRecord is the value stored under AgentKey: what ETA responders need
// to know of an agent. AvailableSince is set while Status is available: the
// agent contributes slots from the first whole minute at or after it.
type AgentRecord struct {
	Tenant         string     `json:"tenant"`
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Status         string     `json:"status"`
	AvailableSince *time.Time `json:"available_since,omitempty"`
	UpdatedAt      time.Time  `json:"updated_at"`
}
