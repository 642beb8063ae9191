package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"unicode"
	"unicode/utf16"

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
	ClientID    string `json:"client_id"`
	TicketType  string `json:"ticket_type"`
	Subject     *text  `json:"subject"`
	Description *text  `json:"description"`
}

// text is an optional free-text member (a ticket's subject or
// description): a JSON string, or null or absent for none; "" is none
// too. Unlike a plain string it refuses an escape of half a surrogate
// pair (\udc00), which encoding/json would quietly turn into U+FFFD:
// the text is kept as sent or refused. Its limits are admission's
// (subjects.CheckContent).
type text string

func (text) acceptsNull() {}

func (t *text) UnmarshalJSON(raw []byte) error {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	if loneSurrogate(raw) {
		return &valueError{message: "must be valid UTF-8: it has an unpaired UTF-16 surrogate escape"}
	}
	*t = text(s)
	return nil
}

// loneSurrogate reports a \uXXXX escape of a UTF-16 surrogate in raw, a
// JSON string encoding/json has decoded, that is not a high surrogate
// followed at once by the escape of a low one.
func loneSurrogate(raw []byte) bool {
	escape := func(i int) (rune, bool) { // the \uXXXX at raw[i], if any
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := escape(i)
		switch {
		case !ok:
			i++ // a two-character escape: skip what it escapes
		case r >= 0xD800 && r < 0xDC00: // high: a low must follow
			if lo, ok := escape(i + 6); !ok || utf16.DecodeRune(r, lo) == unicode.ReplacementChar {
				return true
			}
			i += 11
		case utf16.IsSurrogate(r): // a low one alone
			return true
		default:
			i += 5
		}
	}
	return false
}

// textOf is an optional text's value, "" when absent or null.
func textOf(t *text) string {
	if t == nil {
		return ""
	}
	return string(*t)
}

// content is a create or allocate request's ticket content.
func content(subject, description *text) admission.Content {
	return admission.Content{Subject: textOf(subject), Description: textOf(description)}
}

type ticketIDRequest struct {
	TicketID string `json:"ticket_id"`
}

type validateETARequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
}

type allocateSlotRequest struct {
	ClientID    string `json:"client_id"`
	TicketType  string `json:"ticket_type"`
	SlotID      string `json:"slot_id"`
	Subject     *text  `json:"subject"`
	Description *text  `json:"description"`
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
	// The ticket's content, omitted when it has none.
	Subject     string `json:"subject,omitempty"`
	Description string `json:"description,omitempty"`
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
	acc, err := a.svc.Create(ctx, t, req.TicketType, content(req.Subject, req.Description), idemKey)
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
		Subject: tk.Subject, Description: tk.Description,
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
	al, err := a.svc.AllocateSlot(ctx, t, req.TicketType, req.SlotID, content(req.Subject, req.Description))
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
