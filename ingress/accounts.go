package ingress

import (
	"context"
	"fmt"
	"net/http"

	"tms/subjects"
)

type createAccountRequest struct {
	ClientName    string `json:"client_name"`
	OfficialEmail string `json:"official_email"`
	Password      string `json:"password"`
}

type createAccountResponse struct {
	Status    string `json:"status"`
	ClientID  string `json:"client_id"`
	SubDomain string `json:"sub_domain"`
}

// createAccount opens a tenant account and its database.
func (a *api) createAccount(w http.ResponseWriter, r *http.Request) {
	var req createAccountRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), createTimeout)
	defer cancel()
	t, err := a.registry.CreateAccount(ctx, req.ClientName, req.OfficialEmail, req.Password)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("creating account: %w", err))
		return
	}
	setLogTenant(r.Context(), t.ID)
	openedClient(r, t.ID)
	writeJSON(w, http.StatusCreated, createAccountResponse{Status: "created", ClientID: t.ID, SubDomain: t.SubDomain})
}

type loginRequest struct {
	ClientID string `json:"client_id"`
	Password string `json:"password"`
}

type loginResponse struct {
	Status    string `json:"status"`
	ClientID  string `json:"client_id"`
	SubDomain string `json:"sub_domain"`
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// login checks a tenant's password and issues a session token.
func (a *api) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	if err := subjects.ValidID(req.ClientID); err != nil {
		writeError(w, r, a.logger, errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen))
		return
	}
	// Before argon2: a client_id that guessers have locked out is
	// refused at once, except from an address the tenant uses.
	if err := a.claimClient(r, req.ClientID); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	t, err := a.registry.Authenticate(ctx, req.ClientID, req.Password)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("logging in: %w", err))
		return
	}
	token, expiresAt, err := a.sessions.Issue(ctx, t.ID)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("issuing session: %w", err))
		return
	}
	setLogTenant(r.Context(), t.ID)
	// A token must not linger in a shared cache.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, loginResponse{
		Status: "ok", ClientID: t.ID, SubDomain: t.SubDomain, Token: token, ExpiresAt: timestamp(expiresAt),
	})
}

type logoutRequest struct {
	ClientID string `json:"client_id"`
}

func (q *logoutRequest) claimedClientID() *string { return &q.ClientID }

// logout revokes the presented token only; the tenant's other sessions
// stay valid.
func (a *api) logout(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	var req logoutRequest
	if err := decodeOwned(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	if err := a.sessions.Revoke(ctx, s.token); err != nil {
		writeError(w, r, a.logger, fmt.Errorf("revoking session: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "logged_out"})
}
