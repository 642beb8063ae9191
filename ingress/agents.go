package ingress

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"tms/subjects"
	"tms/tenants"
)

// agentBody is an agent as the API shows it.
type agentBody struct {
	AgentID        string  `json:"agent_id"`
	Name           string  `json:"name"`
	AgentStatus    string  `json:"agent_status"`
	AvailableSince *string `json:"available_since,omitempty"`
	CreatedAt      string  `json:"created_at"`
	UpdatedAt      string  `json:"updated_at"`
}

func agentJSON(ag tenants.Agent) agentBody {
	b := agentBody{
		AgentID: ag.ID, Name: ag.Name, AgentStatus: ag.Status,
		CreatedAt: timestamp(ag.CreatedAt), UpdatedAt: timestamp(ag.UpdatedAt),
	}
	if ag.AvailableSince != nil && ag.Status == subjects.AgentAvailable {
		since := timestamp(*ag.AvailableSince)
		b.AvailableSince = &since
	}
	return b
}

type createAgentRequest struct {
	ClientID string `json:"client_id"`
	Name     string `json:"name"`
}

func (q *createAgentRequest) claimedClientID() *string { return &q.ClientID }

// createAgentResponse is docs/api.md's answer, plus the agent's timestamps.
type createAgentResponse struct {
	Status string `json:"status"`
	agentBody
}

// createAgent registers a service agent, available from now.
func (a *api) createAgent(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	var req createAgentRequest
	if err := decodeOwned(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	ag, err := a.agents.Create(ctx, s.tenant, req.Name)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("creating agent: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, createAgentResponse{Status: "created", agentBody: agentJSON(ag)})
}

type setAgentStatusRequest struct {
	AgentStatus string  `json:"agent_status"`
	ClientID    *string `json:"client_id"`
}

func (q *setAgentStatusRequest) claimedClientID() *string { return q.ClientID }

// setAgentStatus makes an agent available or unavailable.
func (a *api) setAgentStatus(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	agentID := chi.URLParam(r, "agent_id")
	if subjects.ValidID(agentID) != nil {
		// No agent can have such an id: the same answer as for an agent
		// that does not exist, or another tenant's.
		writeError(w, r, a.logger, tenants.ErrAgentNotFound)
		return
	}
	var req setAgentStatusRequest
	if err := decodeOwned(w, r, &req); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	if req.AgentStatus != subjects.AgentAvailable && req.AgentStatus != subjects.AgentUnavailable {
		writeError(w, r, a.logger, errInvalidField("agent_status", "must be %q or %q",
			subjects.AgentAvailable, subjects.AgentUnavailable))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	ag, err := a.agents.SetStatus(ctx, s.tenant, agentID, req.AgentStatus)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("setting status of agent %s: %w", agentID, err))
		return
	}
	resp := setAgentStatusResponse{agentBody: agentJSON(ag)}
	if ag.Status == subjects.AgentUnavailable {
		// The agent's future tickets must not stay on it: the responders
		// re-slot them once their calendar has this write (the revision
		// the admission service sends). Even for a client that hung up.
		resp.Replan = a.tickets.replan(context.WithoutCancel(r.Context()), s.tenant, ag.ID, a.logger)
	}
	writeJSON(w, http.StatusOK, resp)
}

// setAgentStatusResponse is the agent, plus, when it was made
// unavailable, what the re-plan of its tickets did (replanDone) or why it
// could not be confirmed (replanFailed).
type setAgentStatusResponse struct {
	agentBody
	Replan any `json:"replan,omitempty"`
}

type listAgentsResponse struct {
	Agents []agentBody `json:"agents"`
}

// listAgents lists the tenant's agents.
func (a *api) listAgents(w http.ResponseWriter, r *http.Request) {
	s := sessionFrom(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	list, err := a.agents.List(ctx, s.tenant)
	if err != nil {
		writeError(w, r, a.logger, fmt.Errorf("listing agents: %w", err))
		return
	}
	body := listAgentsResponse{Agents: make([]agentBody, 0, len(list))}
	for _, ag := range list {
		body.Agents = append(body.Agents, agentJSON(ag))
	}
	writeJSON(w, http.StatusOK, body)
}
