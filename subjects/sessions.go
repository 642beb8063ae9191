package subjects

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketSessions maps a session token's hash to its tenant; every key
// carries a per-key TTL equal to the session's lifetime.
const BucketSessions = "TMS_SESSIONS"

// SessionsMarkerTTL is how long the sessions bucket keeps the marker an
// expiry or a revocation (a purge) leaves behind, so that every process's
// watch sees the removal.
const SessionsMarkerTTL = 10 * time.Minute

// SessionsBucketConfig is the configuration of BucketSessions; every key
// carries its own TTL.
func SessionsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         BucketSessions,
		Description:    "tms login sessions: token hash -> tenant, per-key TTL",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicasOr1(replicas),
		LimitMarkerTTL: SessionsMarkerTTL,
	}
}

// SessionKey is the sessions-bucket key of a token, given the hex SHA-256
// of the token (the token itself is never stored).
func SessionKey(tokenHashHex string) string { return sessionKeyPrefix + mustID(tokenHashHex) }

// SessionKeys is the watch filter that matches every session key.
const SessionKeys = "s.*"

// sessionKeyPrefix starts every SessionKey.
const sessionKeyPrefix = "s."

// ParseSessionKey is SessionKey's inverse: the token hash of a sessions
// key read back from the bucket; a key SessionKey cannot have produced is
// ErrInvalidID.
func ParseSessionKey(key string) (string, error) {
	hash, ok := strings.CutPrefix(key, sessionKeyPrefix)
	if !ok || ValidID(hash) != nil {
		return "", fmt.Errorf("%w: key %q is not a session key", ErrInvalidID, key)
	}
	return hash, nil
}

// SessionRecord is the value stored under SessionKey.
type SessionRecord struct {
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expires_at"`
}
