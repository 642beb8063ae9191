package subjects

import (
	"fmt"
	"strings"
	"time"
)

// BucketSessions maps a session token's hash to its tenant; every key
// carries a per-key TTL equal to the session's lifetime.
const BucketSessions = "TMS_SESSIONS"

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
