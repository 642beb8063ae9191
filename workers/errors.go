package workers

import (
	"errors"

	"tms/subjects"
)

// Errors of package workers, in one place; callers test them with
// errors.Is.
//
// The ETA responder's: only the responder turns them into reply codes
// (see replyOf; the codes and their sentinels on the asking side are the
// subjects ETA contract).
var (
	// ErrResponderConfig: NewResponder was given an unusable config.
	ErrResponderConfig = errors.New("responder config")
	// ErrNoSlot: no free agent-minute inside the ticket's SLA window.
	ErrNoSlot = errors.New("no free slot in the SLA window")
	// ErrContended: every candidate tried was taken by another responder
	// first; the caller may try again.
	ErrContended = errors.New("slot candidates kept being taken by others")
	// ErrHoldGone: no live hold matches the slot id (expired, confirmed,
	// never issued or replaced).
	ErrHoldGone = errors.New("no live hold for that slot id")
	// ErrNonceReleased: a takeover's nonce names a released ticket; the
	// asker needs a fresh nonce.
	ErrNonceReleased = errors.New("the nonce's ticket was released")
	// ErrPastDeadline: the asker's deadline passed before the write; the
	// request wrote nothing.
	ErrPastDeadline = errors.New("the asker's deadline has passed")
	// ErrTypeMismatch: the held slot is outside the window of the ticket
	// type, judged from the hold's instant.
	ErrTypeMismatch = errors.New("slot outside the SLA window of the ticket type")
	// ErrAgentsBehind: the agents watch did not apply the agents revision
	// a request carries within the wait bound; always wrapped together
	// with ErrUnavailable (503: the client may try again).
	ErrAgentsBehind = errors.New("agents watch behind the request's agents revision")
	// ErrUnavailable: NATS could not give an answer now; always wrapped
	// together with the cause.
	ErrUnavailable = errors.New("slot store unavailable")
)

// The allocator workers'.
var (
	// ErrAllocatorConfig: NewAllocator was given an unusable config.
	ErrAllocatorConfig = errors.New("allocator config")
	// ErrInvalidEvent: a ticket event that no worker could ever write
	// (bad JSON, unknown fields, fields that disagree with the subject or
	// the SLA rules). It is dead-lettered.
	ErrInvalidEvent = subjects.ErrInvalidEvent
)

// RequestError is a request the responder refuses as it stands: Code is
// the reply's code, one of the subjects refusals of a request
// (ETACodeInvalidJSON, ETACodeUnknownField, ETACodeInvalidField,
// ETACodeTenantMismatch, ETACodeBodyTooLarge), Field the offending JSON
// field.
type RequestError struct{ Code, Field, Reason string }

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Code + ": " + e.Reason
	}
	return e.Code + ": " + e.Field + ": " + e.Reason
}
