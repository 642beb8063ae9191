package subjects

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketTenants is the command side of the tenant registry: tenant
// records plus the unique-email and unique-sub_domain claims.
const BucketTenants = "TMS_TENANTS"

// NewTenantID is a new tenant (client) id: "c" and RandomIDChars random
// characters.
func NewTenantID() string { return NewID("c", RandomIDChars) }

// TenantsMarkerTTL is how long the registry bucket keeps the marker a
// per-key TTL or a purge leaves behind, so that watchers (and rebuilding
// watchers) see the removal.
const TenantsMarkerTTL = 10 * time.Minute

// TenantsBucketConfig is the configuration of BucketTenants.
func TenantsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         BucketTenants,
		Description:    "tms tenant registry: tenant records, e-mail and sub_domain claims",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicasOr1(replicas),
		LimitMarkerTTL: TenantsMarkerTTL,
	}
}

// TenantKey is the registry key of one tenant record.
func TenantKey(tenant string) string { return tenantKeyPrefix + mustID(tenant) }

// TenantKeys is the watch filter that matches every tenant record.
const TenantKeys = "tenant.*"

// tenantKeyPrefix starts every TenantKey.
const tenantKeyPrefix = "tenant."

// ParseTenantKey is TenantKey's inverse: the tenant id of a registry key
// read back from the bucket. Any other key (a claim, or a key TenantKey
// cannot have produced) is ErrInvalidID.
func ParseTenantKey(key string) (string, error) {
	id, ok := strings.CutPrefix(key, tenantKeyPrefix)
	if !ok || ValidID(id) != nil {
		return "", fmt.Errorf("%w: key %q is not a tenant key", ErrInvalidID, key)
	}
	return id, nil
}

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
