package ingress

import (
	"net/http"

	"tms/subjects"
)

// ownedBody is a request body that may name the caller's client_id;
// claimedClientID is nil when it names none.
type ownedBody interface{ claimedClientID() *string }

// decodeOwned decodes a tenant-scoped body of an authenticated route and
// refuses one that names another tenant than the session's (checkOwner).
func decodeOwned(w http.ResponseWriter, r *http.Request, req ownedBody) error {
	if err := decodeJSON(w, r, req); err != nil {
		return err
	}
	return checkOwner(req, sessionFrom(r.Context()).tenant.ID, errForbiddenClient)
}

// checkOwner checks the client_id a decoded body names, if it is an
// ownedBody naming one, against tenant, the tenant the transport vouches
// for (the bearer session's on HTTP, the subject's on the NATS API): a
// malformed id is 400 invalid_field, another tenant's is forbidden, the
// transport's 403. One place for that rule, whichever route or transport.
func checkOwner(req any, tenant string, forbidden *apiError) error {
	owned, ok := req.(ownedBody)
	if !ok {
		return nil
	}
	id := owned.claimedClientID()
	switch {
	case id == nil:
		return nil
	case subjects.ValidID(*id) != nil:
		return errInvalidClientID()
	case *id != tenant:
		return forbidden
	}
	return nil
}

// errInvalidClientID is the 400 of a client_id that is no id at all.
func errInvalidClientID() *apiError {
	return errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
}
