package tenants

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestPgRefusal: the three SQLSTATEs of a refused login are a refusal
// (a wrong password cannot be provoked on a trust-auth test server, so
// the classification is checked on the error values pgx returns);
// everything else, including "too many connections", is not.
func TestPgRefusal(t *testing.T) {
	for code, want := range map[string]string{
		"28P01": "user or password is wrong",
		"28000": "no such role",
		"3D000": "no such database",
	} {
		err := fmt.Errorf("connect: %w", &pgconn.PgError{Code: code, Message: "server says " + code})
		why, ok := pgRefusal(err)
		if !ok || !strings.Contains(why, want) || !strings.Contains(why, "server says "+code) {
			t.Errorf("pgRefusal(%s) = %q, %v; want a refusal saying %q", code, why, ok, want)
		}
	}
	for _, err := range []error{nil, errors.New("dial tcp: connection refused"), &pgconn.PgError{Code: "53300"}} {
		if why, ok := pgRefusal(err); ok {
			t.Errorf("pgRefusal(%v) = %q, want no refusal", err, why)
		}
	}
}
