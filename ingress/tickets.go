package ingress

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"tms/ingress/admission"
	"tms/subjects"
	"tms/tenants"
)

// ticketAPI is the ticket operations as both transports answer them: the
// call to the admission service and the answer made of its result. The
// HTTP handlers (tickets_http.go) and the NATS API (natsapi.go) decode
// the request, resolve its tenant and call these, so they answer alike.
type ticketAPI struct {
	svc      *admission.Service
	registry *tenants.Registry
}

// answer is a successful answer: an HTTP status and its JSON body.
type answer struct {
	status int
	body   any
}

type createTicketRequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
}

type ticketIDRequest struct {
	TicketID string `json:"ticket_id"`
}

type validateETARequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
}

type allocateSlotRequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
	SlotID     string `json:"slot_id"`
}

func (q *createTicketRequest) claimedClientID() *string { return &q.ClientID }
func (q *validateETARequest) claimedClientID() *string  { return &q.ClientID }
func (q *allocateSlotRequest) claimedClientID() *string { return &q.ClientID }

// ticketBody is GET /tickets/{ticket_id}'s 200.
type ticketBody struct {
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	Status     string `json:"status"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
	AgentID    string `json:"agent_id"`
	CreatedAt  string `json:"created_at"`
}

type ticketStatusBody struct {
	Status   string `json:"status"`
	TicketID string `json:"ticket_id"`
}

type holdBody struct {
	Status        string `json:"status"`
	SlotID        string `json:"slot_id"`
	SlotTime      string `json:"slot_time"`
	HoldExpiresAt string `json:"hold_expires_at"`
}

// create is create_ticket for t; the caller has checked that
// req.ClientID is t's id. idemKey, when not nil, is the request's valid
// Idempotency-Key.
func (a ticketAPI) create(ctx context.Context, t tenants.Tenant, req createTicketRequest, idemKey *string) (answer, error) {
	acc, err := a.svc.Create(ctx, t, req.TicketType, idemKey)
	if err != nil {
		return answer{}, err
	}
	noteAccepted(ctx, acc.TicketID)
	return answer{status: http.StatusCreated,
		body: subjects.NewAcceptedAnswer(acc.TicketID, acc.Type, acc.Agent, acc.SlotTime, acc.Deadline, acc.CreatedAt)}, nil
}

// cancel is cancel_ticket for t.
func (a ticketAPI) cancel(ctx context.Context, t tenants.Tenant, req ticketIDRequest) (answer, error) {
	c, err := a.svc.Cancel(ctx, t, req.TicketID)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, body: ticketStatusBody{Status: subjects.StatusCancelled, TicketID: c.TicketID}}, nil
}

// get is GET /tickets/{ticket_id} (get_ticket on NATS) for t.
func (a ticketAPI) get(ctx context.Context, t tenants.Tenant, req ticketIDRequest) (answer, error) {
	tk, err := a.svc.Get(ctx, t, req.TicketID)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, body: ticketBody{
		TicketID: tk.TicketID, TicketType: tk.Type, Status: tk.Status, SlotTime: timestamp(tk.SlotTime),
		Deadline: timestamp(tk.Deadline), AgentID: tk.Agent, CreatedAt: timestamp(tk.CreatedAt),
	}}, nil
}

// validateETA is validate_eta for t, the request's client.
func (a ticketAPI) validateETA(ctx context.Context, t tenants.Tenant, req validateETARequest) (answer, error) {
	h, err := a.svc.ValidateETA(ctx, t, req.TicketType)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, body: holdBody{
		Status: "available", SlotID: h.SlotID, SlotTime: timestamp(h.SlotTime), HoldExpiresAt: timestamp(h.ExpiresAt),
	}}, nil
}

// allocateSlot is allocate_slot for t, the request's client.
func (a ticketAPI) allocateSlot(ctx context.Context, t tenants.Tenant, req allocateSlotRequest) (answer, error) {
	al, err := a.svc.AllocateSlot(ctx, t, req.TicketType, req.SlotID)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusCreated, body: ticketStatusBody{Status: subjects.StatusAllocated, TicketID: al.TicketID}}, nil
}

// client resolves the client_id of an internal request, which no session
// vouches for: malformed is 400, unknown is 404 client_not_found.
func (a ticketAPI) client(ctx context.Context, clientID string) (tenants.Tenant, error) {
	if subjects.ValidID(clientID) != nil {
		return tenants.Tenant{}, errInvalidClientID()
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	t, err := a.registry.Get(gctx, clientID)
	if errors.Is(err, tenants.ErrTenantNotFound) {
		return t, errClientNotFound
	}
	if err != nil {
		return t, fmt.Errorf("loading client %s: %w", clientID, err)
	}
	return t, nil
}
