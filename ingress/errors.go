package ingress

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"

	"tms/ingress/admission"
	"tms/subjects"
	"tms/tenants"
)

// Machine-readable error codes, the "error" member of every error body
// (docs/api.md). Several are spelled like ETA reply codes (subjects
// ETACode*); they are the API's own all the same: an ETA reply reaches
// them only through ETAReply.Err, admission's errors and admissionError,
// never by comparing its strings.
const (
	codeInvalidJSON          = "invalid_json"
	codeUnknownField         = "unknown_field"
	codeInvalidField         = "invalid_field"
	codeBodyTooLarge         = "body_too_large"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeUnauthorized         = "unauthorized"
	codeInvalidCredentials   = "invalid_credentials"
	codeForbidden            = "forbidden"
	codeNotFound             = "not_found"
	codeAgentNotFound        = "agent_not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeEmailTaken           = "email_taken"
	codeUnavailable          = "unavailable"
	codeNotReady             = "not_ready"
	codeInternal             = "internal"

	codeTicketNotFound    = "ticket_not_found"
	codeClientNotFound    = "client_not_found"
	codeHoldExpired       = "hold_expired"
	codeTypeMismatch      = "type_mismatch"
	codeSLAUnavailable    = "sla_unavailable"
	codeIdempotencyReused = "idempotency_key_reused"
	codeIdempotencyInUse  = "idempotency_key_in_use"

	codeRateLimited = "rate_limited"
	codeOverloaded  = "overloaded"
)

// Body statuses other than "error" that an error answer may carry
// (docs/api.md: a refused create_ticket is "rejected", a refused validate_eta
// "unavailable").
const (
	statusRejected    = "rejected"
	statusUnavailable = "unavailable"
)

// Fixed messages: the same answer every time, so that the body itself
// reveals nothing (the two causes of invalid_credentials above all).
const (
	msgInvalidCredentials = "client_id or password is incorrect"
	msgUnauthorized       = "a valid bearer token is required (Authorization: Bearer <token> from /login)"
	msgInternal           = "internal error"
	msgUnavailable        = "the service cannot reach its storage right now; retry shortly"
)

// apiError is an error answer: an HTTP status, a machine code, a message
// naming the offending field and any headers the status calls for. cause,
// when set, is logged and never sent.
type apiError struct {
	status     int
	code       string
	message    string
	bodyStatus string // the body's "status"; "" means "error"
	header     map[string]string
	cause      error
	// fits, when not nil, is the body's "fits" (a refused create_ticket:
	// the ticket types that would be admitted now).
	fits *[]string
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.status, e.code, e.message, e.cause)
	}
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message)
}

func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func errInvalidField(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidField,
		message: field + ": " + fmt.Sprintf(format, args...)}
}

// errUnauthorized is the 401 for a missing or unusable Authorization
// header; invalidToken adds RFC 6750's error="invalid_token" for a token
// that was presented but refused.
func errUnauthorized(invalidToken bool) *apiError {
	challenge := "Bearer"
	if invalidToken {
		challenge = `Bearer error="invalid_token"`
	}
	return &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, message: msgUnauthorized,
		header: map[string]string{"WWW-Authenticate": challenge}}
}

var errForbiddenClient = newError(http.StatusForbidden, codeForbidden,
	"client_id: does not match the tenant of the bearer token")

// errTicketNotFound is the one answer for a ticket that does not exist,
// belongs to another tenant, or has an id no ticket can have: the answer
// reveals nothing about other tenants.
var errTicketNotFound = newError(http.StatusNotFound, codeTicketNotFound, "ticket_id: no such ticket")

var errClientNotFound = newError(http.StatusNotFound, codeClientNotFound, "client_id: no such client")

// errUnavailable is a 503 with Retry-After for a dependency that did not
// answer in time (the ETA responders, a slot bucket); cause is logged.
func errUnavailable(cause error) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: msgUnavailable,
		header: map[string]string{"Retry-After": "1"}, cause: cause}
}

// errRateLimitedBy is the 429 of a rate limit (overload.go), policy p in
// state st: Retry-After is when the next token will be there, and the
// RateLimit fields (ratelimit.go) name the policy that refused (none when
// p is nil).
func errRateLimitedBy(p *rateLimitPolicy, st limitState, message string) *apiError {
	return &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, message: message + "; retry after Retry-After seconds",
		header: rateLimitHeaders(p, st)}
}

// errOverloaded is the 503 of load shedding (overload.go).
func errOverloaded(retryAfterSeconds int) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: codeOverloaded,
		message: "the service is overloaded; retry after Retry-After seconds",
		header:  map[string]string{"Retry-After": strconv.Itoa(retryAfterSeconds)}}
}

func errInternal(cause error) *apiError {
	return &apiError{status: http.StatusInternalServerError, code: codeInternal, message: msgInternal, cause: cause}
}

// toAPIError maps any error onto the answer to send. It is the one place
// where errors of the admission and tenants packages become HTTP codes
// (the NATS API sends the same answers with the code in the body). Anything
// it does not know is a 500 whose cause is logged, never sent.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if ae := admissionError(err); ae != nil {
		return ae
	}
	var fe *tenants.FieldError
	switch {
	case errors.As(err, &fe):
		return errInvalidField(fe.Field, "%s", fe.Reason)
	case errors.Is(err, tenants.ErrEmailTaken):
		return newError(http.StatusConflict, codeEmailTaken, "official_email: already registered")
	case errors.Is(err, tenants.ErrInvalidCredentials):
		return newError(http.StatusUnauthorized, codeInvalidCredentials, msgInvalidCredentials)
	case errors.Is(err, tenants.ErrUnauthenticated), errors.Is(err, tenants.ErrTenantNotFound):
		// The only tenant ingress looks up by id is the bearer token's; one
		// that is gone makes the token worthless.
		return errUnauthorized(true)
	case errors.Is(err, tenants.ErrAgentNotFound):
		return newError(http.StatusNotFound, codeAgentNotFound, "agent_id: no such agent")
	case errors.Is(err, tenants.ErrTicketNotFound):
		return errTicketNotFound
	case errors.Is(err, tenants.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrConnectionClosed):
		// A storage call that ran out of its deadline, or a responder that
		// is not there, is an outage from the client's point of view:
		// retrying later is the right advice.
		return errUnavailable(err)
	default:
		return errInternal(err)
	}
}

// admissionError is the answer to an error of package admission, or nil
// for any other error. An outage comes first: admission wraps whatever
// failed on the way (an event that did not decode too) as unavailable
// when the answer is "retry later".
func admissionError(err error) *apiError {
	var noSlot *admission.NoSlotError
	var fe *admission.FieldError
	switch {
	case errors.Is(err, admission.ErrUnavailable):
		return errUnavailable(err)
	case errors.As(err, &noSlot):
		// docs/api.md: a refused create_ticket is "rejected" and says
		// which types would fit now, a refused validate_eta "unavailable".
		bodyStatus, fits := statusRejected, &noSlot.Fits
		if noSlot.Op == subjects.OpValidateETA {
			bodyStatus, fits = statusUnavailable, nil
		} else if noSlot.Fits == nil {
			fits = &[]string{}
		}
		return &apiError{status: http.StatusConflict, code: codeSLAUnavailable, bodyStatus: bodyStatus, fits: fits,
			message: fmt.Sprintf("ticket_type: no agent-minute is free within the %s SLA window (%s)", noSlot.Type, noSlot.SLA)}
	case errors.As(err, &fe):
		return errInvalidField(fe.Field, "%s", fe.Message)
	case errors.Is(err, admission.ErrHoldGone):
		return newError(http.StatusGone, codeHoldExpired,
			"slot_id: no live hold (it expired, was already allocated, or was never issued)")
	case errors.Is(err, admission.ErrTypeMismatch):
		return newError(http.StatusConflict, codeTypeMismatch,
			"ticket_type: the held slot is outside this type's SLA window")
	case errors.Is(err, admission.ErrClientNotFound):
		return errClientNotFound
	case errors.Is(err, admission.ErrTicketNotFound):
		return errTicketNotFound
	case errors.Is(err, admission.ErrIdempotencyInUse):
		return newError(http.StatusConflict, codeIdempotencyInUse,
			"Idempotency-Key: a request with this key is still in flight; retry shortly")
	case errors.Is(err, admission.ErrIdempotencyReused):
		return newError(http.StatusUnprocessableEntity, codeIdempotencyReused,
			"Idempotency-Key: already used with a different request body")
	case errors.Is(err, admission.ErrInternal):
		return errInternal(err)
	}
	return nil
}
