package ingress

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"tms/tenants"
)

// The HTTP face of ticket admission. Each handler decodes and checks the
// request, resolves its tenant (the session's, or on the internal
// listener the body's client_id) and calls the ticket API with a context
// that outlives the client: a reservation made for a client that hung up
// is still published or released, never left half done. Every call
// inside has its own deadline.

func (a *api) respond(w http.ResponseWriter, r *http.Request, ans answer, err error) {
	if err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	writeJSON(w, ans.status, ans.body)
}

// createTicketHTTP is POST /create_ticket.
func (a *api) createTicketHTTP(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	var req createTicketRequest
	// decodeOwned in two steps: a body of another tenant's is still
	// counted under the type it asked for.
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	noteTicketType(r.Context(), req.TicketType)
	if err := checkOwner(&req, s.tenant.ID, errForbiddenClient); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	key, err := idempotencyKeyOf(r.Header.Values(idempotencyHeader))
	if err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.create(markReplays(context.WithoutCancel(r.Context()), w, key), s.tenant, req, key)
	a.respond(w, r, ans, err)
}

// cancelTicketHTTP is POST /cancel_ticket.
func (a *api) cancelTicketHTTP(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	var req ticketIDRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.cancel(context.WithoutCancel(r.Context()), s.tenant, req)
	a.respond(w, r, ans, err)
}

// getTicketHTTP is GET /tickets/{ticket_id}.
func (a *api) getTicketHTTP(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	ans, err := a.tickets.get(r.Context(), s.tenant, ticketIDRequest{TicketID: chi.URLParam(r, "ticket_id")})
	a.respond(w, r, ans, err)
}

// validateETAHTTP is POST /validate_eta on the internal listener.
func (a *api) validateETAHTTP(w http.ResponseWriter, r *http.Request) {
	var req validateETARequest
	a.serveInternal(w, r, &req, func(ctx context.Context, t tenants.Tenant) (answer, error) {
		return a.tickets.validateETA(ctx, t, req)
	})
}

// allocateSlotHTTP is POST /allocate_slot on the internal listener.
func (a *api) allocateSlotHTTP(w http.ResponseWriter, r *http.Request) {
	var req allocateSlotRequest
	a.serveInternal(w, r, &req, func(ctx context.Context, t tenants.Tenant) (answer, error) {
		return a.tickets.allocateSlot(ctx, t, req)
	})
}

// serveInternal is an internal-listener operation, which names its tenant
// in the body: decode req, resolve its client_id once, call, answer. The
// context outlives the client, as for every ticket operation.
func (a *api) serveInternal(w http.ResponseWriter, r *http.Request, req ownedBody,
	call func(context.Context, tenants.Tenant) (answer, error)) {
	if err := decodeJSON(w, r, req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	t, err := a.tickets.client(ctx, *req.claimedClientID())
	if err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := call(ctx, t)
	a.respond(w, r, ans, err)
}
