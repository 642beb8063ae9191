package ingress

import (
	"net/http"

	"tms/subjects"
)

// ownedBody is a request body of an authenticated route that may name the
// caller's client_id; claimedClientID is nil when it names none.
type ownedBody interface{ claimedClientID() *string }

// decodeOwned decodes a tenant-scoped body and refuses one that names
// another tenant (403): one place for that rule, whichever route.
func decodeOwned(w http.ResponseWriter, r *http.Request, req ownedBody) error {
	if err := decodeJSON(w, r, req); err != nil {
		return err
	}
	if id := req.claimedClientID(); id != nil {
		return checkClientID(sessionFrom(r.Context()), *id)
	}
	return nil
}

// checkClientID checks a client_id given in a body against the session:
// a malformed id is 400 invalid_field, another tenant's is 403.
func checkClientID(s session, clientID string) error {
	if err := subjects.ValidID(clientID); err != nil {
		return errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
	}
	if clientID != s.tenant.ID {
		return errForbiddenClient
	}
	return nil
}
