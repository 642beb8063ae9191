package ingress

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"tms/tenants"
)

// GET /calendar (docs/api.md, "Status page"): the tenant's agents and, for
// each, the minutes its tickets hold in the window from the current minute,
// read from the slot bucket as an agent's schedule is (agentReads.confirmed:
// the records admission writes, so a ticket shows from the moment it is
// accepted and is gone from the moment it is cancelled or moved away).

// maxCalendarAgents bounds the agents one calendar reads (one slot-bucket
// read each): a tenant with more gets its oldest ones and "truncated".
// agentReads.calendarAgents is it, but in tests.
const maxCalendarAgents = 100

// calendarReaders is how many agents' slot keys one calendar reads at once.
const calendarReaders = 4

// calendarBody is GET /calendar's 200.
type calendarBody struct {
	From      string              `json:"from"`
	To        string              `json:"to"`
	Hours     int                 `json:"hours"`
	Truncated bool                `json:"truncated"`
	Agents    []calendarAgentBody `json:"agents"`
}

// calendarAgentBody is one agent's row: its booked minutes in minute order.
type calendarAgentBody struct {
	AgentID     string               `json:"agent_id"`
	Name        string               `json:"name"`
	AgentStatus string               `json:"agent_status"`
	Minutes     []calendarMinuteBody `json:"minutes"`
}

type calendarMinuteBody struct {
	Minute     string `json:"minute"`
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	Deadline   string `json:"deadline"`
}

// calendar is t's calendar for hours hours from the current minute; the
// caller has checked hours.
func (r *agentReads) calendar(ctx context.Context, t tenants.Tenant, hours int) (answer, error) {
	if r.agents == nil || r.js == nil {
		return answer{}, errNotConfigured
	}
	lctx, cancel := context.WithTimeout(ctx, callTimeout)
	list, err := r.agents.List(lctx, t)
	cancel()
	if err != nil {
		return answer{}, fmt.Errorf("listing agents: %w", err)
	}
	from := r.now().UTC().Truncate(time.Minute)
	to := from.Add(time.Duration(hours) * time.Hour)
	body := calendarBody{From: timestamp(from), To: timestamp(to), Hours: hours, Agents: []calendarAgentBody{}}
	if limit := r.calendarAgents; len(list) > limit {
		list, body.Truncated = list[:limit], true
	}
	rows := make([]calendarAgentBody, len(list))
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	sem := make(chan struct{}, calendarReaders)
	for i, ag := range list {
		rows[i] = calendarAgentBody{AgentID: ag.ID, Name: ag.Name, AgentStatus: ag.Status, Minutes: []calendarMinuteBody{}}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			recs, err := r.confirmed(ctx, t.ID, ag.ID, from, to)
			if err != nil {
				errs[i] = err
				return
			}
			for _, rec := range recs {
				rows[i].Minutes = append(rows[i].Minutes, calendarMinuteBody{Minute: timestamp(rec.SlotTime),
					TicketID: rec.Ticket, TicketType: rec.Type, Deadline: timestamp(rec.Deadline)})
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return answer{}, err
		}
	}
	body.Agents = append(body.Agents, rows...)
	return answer{status: http.StatusOK, body: body}, nil
}

// calendarHTTP is GET /calendar.
func (a *api) calendarHTTP(reads *agentReads) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hours, err := scheduleHours(r.URL)
		if err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		ans, err := reads.calendar(r.Context(), sessionFrom(r.Context()).tenant, hours)
		a.respond(w, r, ans, err)
	}
}
