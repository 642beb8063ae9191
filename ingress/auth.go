package ingress

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"tms/tenants"
)

// session is what authenticate puts in the request context.
type session struct {
	tenant tenants.Tenant
	token  string
}

type sessionKey struct{}

func sessionFrom(ctx context.Context) session {
	s, ok := ctx.Value(sessionKey{}).(session)
	if !ok {
		// Routes that read the session are mounted behind authenticate.
		panic("ingress: no session in the request context")
	}
	return s
}

// maxTokenLen bounds what is sent to the sessions store; real tokens are
// far shorter.
const maxTokenLen = 256

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive, RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	if token == "" || len(token) > maxTokenLen {
		return "", false
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return token, true
}

// authenticate admits a request only with a live session token and puts
// the token's tenant into the request context.
func (a *api) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			writeError(w, r, a.logger, errUnauthorized(false))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		tenantID, err := a.sessions.Authenticate(ctx, token)
		if err != nil {
			writeError(w, r, a.logger, fmt.Errorf("authenticating session: %w", err))
			return
		}
		t, err := a.registry.Get(ctx, tenantID)
		if err != nil {
			writeError(w, r, a.logger, fmt.Errorf("loading tenant %s of session: %w", tenantID, err))
			return
		}
		setLogTenant(r.Context(), t.ID)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, session{tenant: t, token: token})))
	})
}
