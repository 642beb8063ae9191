package subjects

import (
	"errors"
	"fmt"
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
