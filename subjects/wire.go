package subjects

import "time"

// TenantRecord is the value stored under TenantKey: the registry's command
// model of one tenant. PasswordHash is a PHC-format argon2id string.
type TenantRecord struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Email        string    `json:"email"`
	PasswordHash string    `json:"password_hash"`
	SubDomain    string    `json:"sub_domain"`
	DBServer     string    `json:"db_server"` // placement: host:port of one --database-url server
	DBName       string    `json:"db_name"`
	CreatedAt    time.Time `json:"created_at"`
}

// Claim is the value stored under EmailKey and SubDomainKey: which tenant
// holds the claim.
type Claim struct {
	Tenant string `json:"tenant"`
}

// SessionRecord is the value stored under SessionKey.
type SessionRecord struct {
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expires_at"`
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
