package subjects

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KV buckets.
const (
	// BucketTenants is the command side of the tenant registry: tenant
	// records plus the unique-email and unique-sub_domain claims.
	BucketTenants = "TMS_TENANTS"
	// BucketSessions maps a session token's hash to its tenant; every key
	// carries a per-key TTL equal to the session's lifetime.
	BucketSessions = "TMS_SESSIONS"
	// BucketAgents holds each tenant's service agents and their
	// availability, so ETA responders never read Postgres on the hot path.
	BucketAgents = "TMS_AGENTS"
)

// MaxIDLen is the longest client_id, ticket_id or agent_id accepted.
const MaxIDLen = 64

// ErrInvalidID reports an id that is not 1-64 characters of [a-z0-9_-].
var ErrInvalidID = errors.New("invalid id")

// ValidID checks that id is a non-empty string of at most MaxIDLen
// characters from [a-z0-9_-]: safe as a NATS subject token and as a KV key
// token (no '.', '*', '>', spaces or upper case).
func ValidID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrInvalidID, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%w: character %q at %d", ErrInvalidID, c, i)
	}
	return nil
}

func mustID(id string) string {
	if err := ValidID(id); err != nil {
		// Callers validate ids at the edge; reaching here is a programming
		// error that would otherwise build a wildcard or a foreign key.
		panic(fmt.Sprintf("subjects: %v: %q", err, id))
	}
	return id
}

// TenantKey is the registry key of one tenant record.
func TenantKey(tenant string) string { return "tenant." + mustID(tenant) }

// TenantKeys is the watch filter that matches every tenant record.
const TenantKeys = "tenant.*"

// EmailKey is the registry key that claims an e-mail address. The address
// is folded to lower case and hashed, so the key is a valid KV token and
// uniqueness is case-insensitive.
func EmailKey(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return "email." + hex.EncodeToString(sum[:])
}

// SubDomainKey is the registry key that claims a sub_domain. sub matches
// [a-z0-9-], as produced by the registry's slug rule.
func SubDomainKey(sub string) string { return "subdomain." + mustID(sub) }

// SessionKey is the sessions-bucket key of a token, given the hex SHA-256
// of the token (the token itself is never stored).
func SessionKey(tokenHashHex string) string { return "s." + mustID(tokenHashHex) }

// SessionKeys is the watch filter that matches every session key.
const SessionKeys = "s.*"

// AgentKey is the agents-bucket key of one agent of one tenant.
func AgentKey(tenant, agent string) string { return mustID(tenant) + "." + mustID(agent) }

// TenantAgents is the watch filter that matches every agent of a tenant.
func TenantAgents(tenant string) string { return mustID(tenant) + ".*" }
