package subjects

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"time"
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

func replicasOr1(r int) int {
	if r <= 0 {
		return 1
	}
	return r
}

// idEncoding spells the random part of every id tms makes in lower-case
// base32 ([a-z2-7]), so ids are valid ids and subject tokens as they are.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// RandomIDChars is the length of the random part of a tenant, agent or
// ticket id: 20 characters of 5 bits, 100 random bits, so an id reveals
// nothing and cannot be enumerated.
const RandomIDChars = 20

// NewID is prefix followed by n random characters of [a-z2-7], from
// crypto/rand: the one generator of the ids tms makes (NewTenantID,
// NewAgentID, NewTicketID, NewHoldNonce). prefix must itself be a valid
// id or empty for the result to be one.
func NewID(prefix string, n int) string {
	b := make([]byte, (5*n+7)/8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + idEncoding.EncodeToString(b)[:n]
}

// Stamp is an instant as tms records it: UTC, truncated to the
// microsecond that Postgres keeps, so that it reads the same from every
// store (KV, the stream, the database) and every answer.
func Stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// FormatStamp is Stamp(t) in RFC 3339 with as many fraction digits as it
// has, as the API shows instants.
func FormatStamp(t time.Time) string { return Stamp(t).Format(time.RFC3339Nano) }
