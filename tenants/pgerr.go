package tenants

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

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
