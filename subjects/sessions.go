package subjects

import (
	"time"
)

// BucketSessions maps a session token's hash to its tenant; every key
// carries a per-key TTL equal to the session's lifetime.
const BucketSessions = "TMS_SESSIONS"

// SessionKey is the sessions-bucket key of a token, given the hex SHA-256
// of the token (the token itself is never stored).
func SessionKey(tokenHashHex string) string { return "s." + mustID(tokenHashHex) }

// SessionKeys is the watch filter that matches every session key.
const SessionKeys = "s.*"

// SessionRecord is the value stored under SessionKey.
type SessionRecord struct {
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expires_at"`
}
