package admission

import (
	"errors"
	"fmt"
	"time"
)

// Errors of admission. Callers test them with errors.Is (errors.As for
// the typed ones); package ingress maps them onto its answers in one
// place. Errors of the Gate and of package tenants (a row that cannot be
// read) pass through as they are.
var (
	// ErrNoSlot: no agent-minute is free within the type's SLA window; the
	// error is a *NoSlotError saying for which request.
	ErrNoSlot = errors.New("no slot free within the SLA window")
	// ErrHoldGone: allocate_slot named no live hold (it expired, was
	// already allocated, or was never issued).
	ErrHoldGone = errors.New("no live hold")
	// ErrTypeMismatch: the held slot is outside the ticket type's SLA
	// window.
	ErrTypeMismatch = errors.New("held slot outside the type's SLA window")
	// ErrClientNotFound: the ETA responders know no such tenant.
	ErrClientNotFound = errors.New("client not found")
	// ErrTicketNotFound: no such ticket for this tenant (another
	// tenant's ticket, and an id no ticket can have, are reported the
	// same way).
	ErrTicketNotFound = errors.New("ticket not found")
	// ErrIdempotencyInUse: a request with the same Idempotency-Key is
	// still in flight.
	ErrIdempotencyInUse = errors.New("idempotency key in use")
	// ErrIdempotencyReused: the Idempotency-Key was used with another
	// request body.
	ErrIdempotencyReused = errors.New("idempotency key reused with another request")
	// errNonceReleased: a takeover's nonce names a released ticket (see
	// createClaimed); never returned to callers.
	errNonceReleased = errors.New("the taken-over nonce's ticket was released")
	// ErrUnavailable: a dependency (the ETA responders, a slot bucket,
	// the idempotency bucket) did not answer in time; always wrapped
	// together with the cause (unavailable).
	ErrUnavailable = errors.New("admission unavailable")
	// ErrInternal: something that is ours to fix (an answer outside the
	// protocol, a record that does not decode); always wrapped together
	// with the cause (internal).
	ErrInternal = errors.New("admission internal error")
)

// NoSlotError is ErrNoSlot for one request: the ticket type and its SLA,
// and the operation refused (subjects.OpCreateTicket or OpValidateETA).
// Fits (create_ticket only) lists the ticket types the responders would
// admit now, by the same feasibility test: empty when none would.
type NoSlotError struct {
	Op   string
	Type string
	SLA  time.Duration
	Fits []string
}

func (e *NoSlotError) Error() string {
	return fmt.Sprintf("%s: no %s slot free within %s", e.Op, e.Type, e.SLA)
}

// Is makes errors.Is(err, ErrNoSlot) true.
func (e *NoSlotError) Is(target error) bool { return target == ErrNoSlot }

// FieldError reports an invalid request value: Field is the request's
// field (ticket_type, slot_id), Message says what it must be.
type FieldError struct{ Field, Message string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func invalidField(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// unavailable wraps cause as ErrUnavailable.
func unavailable(cause error) error { return fmt.Errorf("%w: %w", ErrUnavailable, cause) }

// internal wraps cause as ErrInternal.
func internal(cause error) error { return fmt.Errorf("%w: %w", ErrInternal, cause) }
