package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tms/subjects"
	"tms/tenants"
)

// The questions of feasibility admission (issue 10) that change nothing
// or only move tickets inside their windows: what a tenant could admit
// now (Capacity), re-slotting the tickets of agents that went away
// (Replan) and the tickets no schedule can save (AtRisk). Each is one
// request to the tenant's ETA responders, which answer from the same
// plan a reserve is judged by.

// ticketTypes is every ticket type, in the order the API lists them.
var ticketTypes = []string{subjects.Gold, subjects.Silver, subjects.Bronze}

// TypeCapacity is what a tenant could admit of one ticket type now:
// Available more tickets, the first of them planned at Agent and
// SlotTime (empty and zero when Available is 0) after Moves moves of
// accepted tickets.
type TypeCapacity struct {
	Type      string
	Available int
	Agent     string
	SlotTime  time.Time
	Moves     int
}

// Capacity is Service.Capacity's answer: per ticket type, in the order
// GOLD, SILVER, BRONZE, judged from the instant AsOf.
type Capacity struct {
	AsOf  time.Time
	Types []TypeCapacity
}

// AtRiskTicket is a ticket no schedule can keep inside its window: it
// holds a minute of an agent that is no longer available.
type AtRiskTicket struct {
	TicketID, Type, Agent string
	SlotTime, Deadline    time.Time
}

// Replanned is what Service.Replan did: Moved tickets re-slotted onto
// available agents, and the tickets left AtRisk.
type Replanned struct {
	Moved  int
	AtRisk []AtRiskTicket
}

// Capacity reports, changing nothing, how many more tickets of each type
// t could admit now, by the test a create_ticket is judged by (holds
// count as accepted while they live). It reads the tenant's agents as a
// create would (the revision of its last agent write).
func (s *Service) Capacity(ctx context.Context, t tenants.Tenant) (Capacity, error) {
	release, err := s.enter(t.ID)
	if err != nil {
		return Capacity{}, err
	}
	defer release()
	asOf := subjects.Stamp(s.now())
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETACapacity, Tenant: t.ID, CreatedAt: asOf, AgentsRev: s.agentsRev(t.ID),
	})
	if err != nil {
		return Capacity{}, asOutage(err)
	}
	if err := reply.Err(); err != nil {
		return Capacity{}, replyError(subjects.ETACapacity, err)
	}
	types, err := capacityOf(reply.Capacity, asOf)
	if err != nil {
		return Capacity{}, internal(fmt.Errorf("the ETA responder's answer to %s: %w", subjects.ETACapacity, err))
	}
	return Capacity{AsOf: asOf, Types: types}, nil
}

// capacityOf checks a capacity reply against the contract (one entry per
// ticket type; a planned slot, inside the type's window of asOf, exactly
// when some are available) and puts it in the API's order.
func capacityOf(entries []subjects.TypeCapacity, asOf time.Time) ([]TypeCapacity, error) {
	byType := make(map[string]subjects.TypeCapacity, len(entries))
	for _, c := range entries {
		sla, ok := subjects.SLA(c.Type)
		switch {
		case !ok:
			return nil, fmt.Errorf("capacity of an unknown ticket type %q", c.Type)
		case byType[c.Type].Type != "":
			return nil, fmt.Errorf("capacity of %s given twice", c.Type)
		case c.Available < 0 || c.Moves < 0:
			return nil, fmt.Errorf("capacity of %s: %d available after %d moves", c.Type, c.Available, c.Moves)
		case c.Available > 0 && subjects.ValidID(c.Agent) != nil:
			return nil, fmt.Errorf("capacity of %s: planned agent %q", c.Type, c.Agent)
		case c.Available > 0 && !inWindow(c.SlotTime, asOf, sla):
			return nil, fmt.Errorf("capacity of %s: planned slot %s outside the window of %s", c.Type,
				c.SlotTime.Format(time.RFC3339), asOf.Format(time.RFC3339Nano))
		}
		byType[c.Type] = c
	}
	out := make([]TypeCapacity, 0, len(ticketTypes))
	for _, typ := range ticketTypes {
		c, ok := byType[typ]
		if !ok {
			return nil, fmt.Errorf("no capacity of %s", typ)
		}
		tc := TypeCapacity{Type: typ, Available: c.Available, Moves: c.Moves}
		if c.Available > 0 {
			tc.Agent, tc.SlotTime = c.Agent, c.SlotTime.UTC()
		}
		out = append(out, tc)
	}
	return out, nil
}

// inWindow reports whether slot is a whole minute inside the window of a
// ticket created at createdAt with sla (docs/api.md's rule).
func inWindow(slot, createdAt time.Time, sla time.Duration) bool {
	return slot.Equal(slot.Truncate(time.Minute)) && !slot.Before(createdAt) && !slot.Add(time.Minute).After(createdAt.Add(sla))
}

// ReplanPatience is how long Replan waits for the responders: a re-plan
// writes one atomic batch per rescued ticket (a few milliseconds each),
// so an agent with a full day's tickets takes seconds. It stays under
// the HTTP write timeout (15 s) and the responders' own bound on one
// request (10 s); a re-plan cut short keeps what it moved, and the next
// one goes on from there.
const ReplanPatience = 8 * time.Second

// Replan asks the responders to re-slot t's tickets held by agents that
// are no longer available onto other agents inside their windows, once
// their calendar has applied the tenant's last agent write (the one that
// made an agent unavailable): the call that follows such a write.
// Repeating it moves nothing twice, so a caller whose Replan failed may
// simply call it again.
func (s *Service) Replan(ctx context.Context, t tenants.Tenant) (Replanned, error) {
	reply, err := s.askWithin(ctx, subjects.ETARequest{Op: subjects.ETAReplan, Tenant: t.ID, AgentsRev: s.agentsRev(t.ID)},
		max(s.budget.ETA, ReplanPatience))
	if err != nil {
		return Replanned{}, asOutage(err)
	}
	if err := reply.Err(); err != nil {
		return Replanned{}, replyError(subjects.ETAReplan, err)
	}
	if reply.Moved < 0 {
		return Replanned{}, internal(fmt.Errorf("the ETA responder's answer to %s: %d moved", subjects.ETAReplan, reply.Moved))
	}
	risk, err := atRiskOf(reply.AtRisk)
	if err != nil {
		return Replanned{}, internal(fmt.Errorf("the ETA responder's answer to %s: %w", subjects.ETAReplan, err))
	}
	// Each move is a slot record the allocators have yet to read.
	for range reply.Moved {
		s.published()
	}
	return Replanned{Moved: reply.Moved, AtRisk: risk}, nil
}

// AtRisk lists, changing nothing, t's tickets that no schedule can keep
// inside their windows (they hold minutes of agents no longer
// available), earliest slot first as the responders list them.
func (s *Service) AtRisk(ctx context.Context, t tenants.Tenant) ([]AtRiskTicket, error) {
	release, err := s.enter(t.ID)
	if err != nil {
		return nil, err
	}
	defer release()
	reply, err := s.ask(ctx, subjects.ETARequest{Op: subjects.ETAAtRisk, Tenant: t.ID})
	if err != nil {
		return nil, asOutage(err)
	}
	if err := reply.Err(); err != nil {
		return nil, replyError(subjects.ETAAtRisk, err)
	}
	risk, err := atRiskOf(reply.AtRisk)
	if err != nil {
		return nil, internal(fmt.Errorf("the ETA responder's answer to %s: %w", subjects.ETAAtRisk, err))
	}
	return risk, nil
}

// atRiskOf checks the tickets of an at-risk list: ids, a known type,
// whole-minute slots and a deadline.
func atRiskOf(list []subjects.AtRiskTicket) ([]AtRiskTicket, error) {
	out := make([]AtRiskTicket, 0, len(list))
	for _, r := range list {
		_, ok := subjects.SLA(r.Type)
		switch {
		case subjects.ValidID(r.Ticket) != nil:
			return nil, fmt.Errorf("at-risk ticket id %q", r.Ticket)
		case !ok:
			return nil, fmt.Errorf("at-risk ticket %s of type %q", r.Ticket, r.Type)
		case subjects.ValidID(r.Agent) != nil:
			return nil, fmt.Errorf("at-risk ticket %s on agent %q", r.Ticket, r.Agent)
		case r.SlotTime.IsZero() || !r.SlotTime.Equal(r.SlotTime.Truncate(time.Minute)) || r.Deadline.IsZero():
			return nil, errors.New("at-risk ticket " + r.Ticket + " without a whole-minute slot and a deadline")
		}
		out = append(out, AtRiskTicket{TicketID: r.Ticket, Type: r.Type, Agent: r.Agent,
			SlotTime: r.SlotTime.UTC(), Deadline: r.Deadline.UTC()})
	}
	return out, nil
}
