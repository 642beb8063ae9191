package tenants

import "errors"

// Errors of the tenants package. Callers test them with errors.Is; the
// ingress layer maps them onto HTTP codes.
var (
	// ErrEmailTaken: another tenant already holds the e-mail address
	// (compared case-insensitively).
	ErrEmailTaken = errors.New("email already taken")
	// ErrInvalidCredentials: unknown client id or wrong password; the two
	// are deliberately indistinguishable.
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrTenantNotFound: no tenant with that id.
	ErrTenantNotFound = errors.New("tenant not found")
	// ErrUnauthenticated: a session token that is missing, malformed,
	// unknown, expired or revoked.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrAgentNotFound: no such agent for this tenant (another tenant's
	// agent is reported the same way).
	ErrAgentNotFound = errors.New("agent not found")
	// ErrUnavailable: NATS or Postgres cannot be reached now; it is always
	// wrapped together with the cause.
	ErrUnavailable = errors.New("service unavailable")
)

// FieldError reports a bad input value. Field is the JSON field name
// (client_name, official_email, password, name, agent_status ...).
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }
