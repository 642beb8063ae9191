package tenants

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgUnavailable reports whether err means Postgres could not be reached
// or refused work for now (rather than refusing this statement).
func pgUnavailable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce):
		// Whatever the server said while we were connecting (too many
		// connections, database not accepting connections, shutting
		// down), no statement ran: it is worth trying again later.
		return true
	case errors.As(err, &pe):
		switch pe.Code[:2] {
		case "08", // connection exception
			"53": // insufficient resources: too many connections, disk full
			return true
		}
		switch pe.Code {
		case "57P01", "57P02", "57P03": // admin/crash shutdown, cannot connect now
			return true
		}
		return false
	case errors.As(err, &ne), pgconn.Timeout(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	return false
}

// pgErr wraps a failed Postgres call with op, and with ErrUnavailable when
// the cause is connectivity.
func pgErr(op string, err error) error {
	if pgUnavailable(err) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// pgRefusal says why a server that answered refused to let tms in: the
// cause is the configured role, password or database, which no retry
// fixes, unlike a server that is down. ok is false for any other error.
func pgRefusal(err error) (why string, ok bool) {
	if err == nil {
		return "", false
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return "", false
	}
	switch pe.Code {
	case "28P01": // invalid_password
		return fmt.Sprintf("authentication failed: %s (SQLSTATE %s): the URL's user or password is wrong", pe.Message, pe.Code), true
	case "28000": // invalid_authorization_specification: no such role, or pg_hba.conf refuses it
		return fmt.Sprintf("%s (SQLSTATE %s): no such role, or the server's pg_hba.conf does not let it in", pe.Message, pe.Code), true
	case "3D000": // invalid_catalog_name
		return fmt.Sprintf("%s (SQLSTATE %s): no such database; the URL's path names an existing maintenance database such as /postgres",
			pe.Message, pe.Code), true
	}
	return "", false
}

// refusedError is a server's refusal (pgRefusal) with the server named.
// errors.Is matches ErrPostgresRefused and errors.As the *pgconn.PgError;
// it is not ErrUnavailable, whatever the connect error said.
type refusedError struct {
	msg   string
	cause *pgconn.PgError
}

func (e *refusedError) Error() string   { return e.msg }
func (e *refusedError) Unwrap() []error { return []error{ErrPostgresRefused, e.cause} }

// refusal is err as a *refusedError naming server, or nil when err is not
// a refusal.
func refusal(server string, err error) error {
	why, ok := pgRefusal(err)
	if !ok {
		return nil
	}
	var pe *pgconn.PgError
	errors.As(err, &pe)
	return &refusedError{msg: server + ": " + why, cause: pe}
}

// Kinds of tenant database errors (DBErrorKind), the bounded label values
// of tms_tenant_db_errors_total.
const (
	DBErrorUnavailable = "unavailable" // Postgres not reachable, or refusing work for now
	DBErrorTimeout     = "timeout"     // a deadline passed, or the statement was cancelled
	DBErrorConflict    = "conflict"    // the agent-minute is held by another live ticket
	DBErrorConstraint  = "constraint"  // any other integrity constraint refused the write
	DBErrorOther       = "other"
)

// DBErrorKinds is every value DBErrorKind returns.
var DBErrorKinds = []string{DBErrorUnavailable, DBErrorTimeout, DBErrorConflict, DBErrorConstraint, DBErrorOther}

// DBErrorKind classifies an error of a tenant database call, for metrics:
// "" for nil, else one of DBErrorKinds. A timeout is told apart from the
// other outages (both are ErrUnavailable to the callers) because a slow
// database and a missing one call for different fixes.
func DBErrorKind(err error) string {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrSlotTaken):
		return DBErrorConflict
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgCode(err) == "57014": // query_canceled
		return DBErrorTimeout
	case errors.Is(err, ErrUnavailable), pgUnavailable(err):
		return DBErrorUnavailable
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "23"): // integrity constraint violation
		return DBErrorConstraint
	}
	return DBErrorOther
}
