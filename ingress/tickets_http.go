package ingress

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// The HTTP face of the ticket service. Each handler decodes and checks the
// request and hands it to the service with a context that outlives the
// client: a reservation made for a client that hung up is still published
// or released, never left half done. Every call inside has its own
// deadline.

func (a *api) respond(w http.ResponseWriter, r *http.Request, ans answer, err error) {
	if err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	writeJSON(w, ans.status, ans.body)
}

func (q *createTicketRequest) claimedClientID() *string { return &q.ClientID }

// createTicketHTTP is POST /create_ticket.
func (a *api) createTicketHTTP(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	var req createTicketRequest
	if err := decodeOwned(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	key, err := idempotencyKeyOf(r.Header.Values(idempotencyHeader))
	if err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.create(context.WithoutCancel(r.Context()), s.tenant, req, key)
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
	ans, err := a.tickets.cancel(context.WithoutCancel(r.Context()), s.tenant, req.TicketID)
	a.respond(w, r, ans, err)
}

// getTicketHTTP is GET /tickets/{ticket_id}.
func (a *api) getTicketHTTP(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	ans, err := a.tickets.get(r.Context(), s.tenant, chi.URLParam(r, "ticket_id"))
	a.respond(w, r, ans, err)
}

// validateETAHTTP is POST /validate_eta on the internal listener.
func (a *api) validateETAHTTP(w http.ResponseWriter, r *http.Request) {
	var req validateETARequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.validateETA(context.WithoutCancel(r.Context()), req)
	a.respond(w, r, ans, err)
}

// allocateSlotHTTP is POST /allocate_slot on the internal listener.
func (a *api) allocateSlotHTTP(w http.ResponseWriter, r *http.Request) {
	var req allocateSlotRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.allocateSlot(context.WithoutCancel(r.Context()), req)
	a.respond(w, r, ans, err)
}
