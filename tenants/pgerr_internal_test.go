package tenants

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// TestDBErrorKind: each kind of failure gets its bounded label, wrapped
// as the tenants calls wrap them.
func TestDBErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("apply: %w", &SlotConflictError{Ticket: "x"}), DBErrorConflict},
		{pgErr("apply", context.DeadlineExceeded), DBErrorTimeout},
		{pgErr("apply", &pgconn.PgError{Code: "57014"}), DBErrorTimeout},
		{pgErr("apply", &pgconn.PgError{Code: "08006"}), DBErrorUnavailable},
		{pgErr("apply", &pgconn.PgError{Code: "53300"}), DBErrorUnavailable},
		{fmt.Errorf("x: %w", ErrUnavailable), DBErrorUnavailable},
		{pgErr("apply", &pgconn.PgError{Code: "23505"}), DBErrorConstraint},
		{pgErr("apply", &pgconn.PgError{Code: "42P01"}), DBErrorOther},
		{errors.New("boom"), DBErrorOther},
	} {
		if got := DBErrorKind(c.err); got != c.want {
			t.Errorf("DBErrorKind(%v) = %q, want %q", c.err, got, c.want)
		}
		if c.err != nil && !slices.Contains(DBErrorKinds, DBErrorKind(c.err)) {
			t.Errorf("DBErrorKind(%v) not in DBErrorKinds", c.err)
		}
	}
}
