package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"slices"

	"tms/ingress/admission"
	"tms/tenants"
)

// The reads and the re-plan of feasibility admission (docs/api.md): GET
// /capacity, GET /tickets/at-risk, and the re-plan a PATCH /agents/{id}
// to unavailable asks for. Each is one question to the tenant's ETA
// responders through the admission service.

// tenantReadRequest is the body of a NATS read that needs nothing but its
// tenant: {} or {"client_id"} (the subject's tenant).
type tenantReadRequest struct {
	ClientID *string `json:"client_id"`
}

func (q *tenantReadRequest) claimedClientID() *string { return q.ClientID }

// capacityBody is GET /capacity's 200.
type capacityBody struct {
	AsOf     string             `json:"as_of"`
	Capacity []typeCapacityBody `json:"capacity"`
}

// typeCapacityBody is one ticket type's line of GET /capacity: the slot
// and agent a new ticket of the type would get now, when one would fit.
type typeCapacityBody struct {
	TicketType string `json:"ticket_type"`
	Available  int    `json:"available"`
	SlotTime   string `json:"slot_time,omitempty"`
	AgentID    string `json:"agent_id,omitempty"`
	Moves      int    `json:"moves"`
}

// atRiskBody is GET /tickets/at-risk's 200.
type atRiskBody struct {
	Tickets []atRiskTicketBody `json:"tickets"`
}

type atRiskTicketBody struct {
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	AgentID    string `json:"agent_id"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
}

// replanDone is the "replan" member of a PATCH that made an agent
// unavailable, once the responders have re-planned.
type replanDone struct {
	Moved  int `json:"moved"`
	AtRisk int `json:"at_risk"`
}

// replanFailed is the "replan" member when the re-plan could not be
// confirmed: the agent change stands; Retry names the request that
// re-plans again (repeating it moves nothing twice).
type replanFailed struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Retry   string `json:"retry"`
}

// capacity is GET /capacity (get_capacity on NATS) for t.
func (a ticketAPI) capacity(ctx context.Context, t tenants.Tenant) (answer, error) {
	c, err := a.svc.Capacity(ctx, t)
	if err != nil {
		return answer{}, err
	}
	body := capacityBody{AsOf: timestamp(c.AsOf), Capacity: make([]typeCapacityBody, 0, len(c.Types))}
	for _, tc := range c.Types {
		line := typeCapacityBody{TicketType: tc.Type, Available: tc.Available, Moves: tc.Moves}
		if tc.Available > 0 {
			line.SlotTime, line.AgentID = timestamp(tc.SlotTime), tc.Agent
		}
		body.Capacity = append(body.Capacity, line)
	}
	return answer{status: http.StatusOK, body: body}, nil
}

// atRisk is GET /tickets/at-risk (get_at_risk on NATS) for t.
func (a ticketAPI) atRisk(ctx context.Context, t tenants.Tenant) (answer, error) {
	list, err := a.svc.AtRisk(ctx, t)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, body: atRiskBody{Tickets: atRiskJSON(list)}}, nil
}

func atRiskJSON(list []admission.AtRiskTicket) []atRiskTicketBody {
	out := make([]atRiskTicketBody, 0, len(list))
	for _, r := range list {
		out = append(out, atRiskTicketBody{TicketID: r.TicketID, TicketType: r.Type, AgentID: r.Agent,
			SlotTime: timestamp(r.SlotTime), Deadline: timestamp(r.Deadline)})
	}
	return out
}

// replan asks the responders to re-slot t's tickets off agents that are
// no longer available, after the agent write that made agentID one, and
// returns the "replan" member of the PATCH's answer. It never fails the
// PATCH: the agent change is durable, and a re-plan that cannot be
// confirmed is answered as such, with the request that retries it.
func (a ticketAPI) replan(ctx context.Context, t tenants.Tenant, agentID string, logger *slog.Logger) any {
	r, err := a.svc.Replan(ctx, t)
	if err == nil {
		return replanDone{Moved: r.Moved, AtRisk: len(r.AtRisk)}
	}
	ae := toAPIError(err)
	logger.Error("re-planning after an agent became unavailable", slog.String("tenant", t.ID),
		slog.String("agent", agentID), slog.Int("status", ae.status), slog.String("code", ae.code), slog.Any("err", err))
	return replanFailed{Error: ae.code,
		Message: "the agent change is saved, but its re-plan could not be confirmed (" + ae.message +
			"); repeat the PATCH to re-plan, GET /tickets/at-risk lists the tickets no agent can take",
		Retry: "PATCH /agents/" + agentID}
}

// capacityHTTP is GET /capacity.
func (a *api) capacityHTTP(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r.URL); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.capacity(r.Context(), sessionFrom(r.Context()).tenant)
	a.respond(w, r, ans, err)
}

// atRiskHTTP is GET /tickets/at-risk.
func (a *api) atRiskHTTP(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r.URL); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ans, err := a.tickets.atRisk(r.Context(), sessionFrom(r.Context()).tenant)
	a.respond(w, r, ans, err)
}

// noQuery refuses a query string on an endpoint that takes no
// parameters, naming the first one, as an unknown body field is refused:
// a parameter the client believes filters the answer must not be ignored.
func noQuery(u *url.URL) error {
	if u.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil || len(q) == 0 {
		return newError(http.StatusBadRequest, codeInvalidField, "query: %s takes no query parameters", quote(u.Path))
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	return newError(http.StatusBadRequest, codeUnknownField, "query parameter %s: %s takes none", quote(names[0]), quote(u.Path))
}
