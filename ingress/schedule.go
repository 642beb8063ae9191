package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// An agent and its schedule (docs/api.md, "Agents and their schedule"):
// GET /agents/{agent_id} and GET /agents/{agent_id}/schedule, and the NATS
// API's get_agent and get_agent_schedule. The agent is read from its
// tenant's database; its schedule from its tenant's slot bucket, where
// the newest record of each of its minutes says which ticket holds it:
// the same records admission writes and the allocators consume, so a
// ticket is listed from the moment it is accepted and gone from the
// moment it is cancelled or moved away.

// Bounds of a schedule's window: whole hours from the current minute.
const (
	defaultScheduleHours = 8
	maxScheduleHours     = 8
)

// maxScheduleScan bounds the slot keys one schedule reads. The watch's
// filter (<tenant>.<agent>.*) matches every minute of the agent the
// bucket still holds: records are kept subjects.SlotRecordAge after they
// are written and reach subjects.LongestSLA ahead, so an agent has at most
// that many minutes of keys. More means keys written by hand; the read
// stops rather than run without bound.
var maxScheduleScan = int((subjects.SlotRecordAge+subjects.LongestSLA)/time.Minute) + 60

// agentReads answers the two reads of an agent for both transports.
type agentReads struct {
	agents *tenants.Agents
	js     jetstream.JetStream
	// shards is the slot shard count. Ingress has no setting of its own:
	// it is the admission service's default, as cmd/tms runs it.
	shards int
	now    func() time.Time
	logger *slog.Logger
	slots  []atomic.Pointer[jetstream.KeyValue] // opened on first use
	// calendarAgents bounds the agents of one calendar (calendar.go).
	calendarAgents int
}

func newAgentReads(cfg Config) *agentReads {
	r := &agentReads{agents: cfg.Agents, js: cfg.JS, shards: subjects.DefaultSlotShards, now: time.Now, logger: cfg.Logger,
		calendarAgents: maxCalendarAgents}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	r.slots = make([]atomic.Pointer[jetstream.KeyValue], r.shards)
	return r
}

// agentRequest is get_agent's body on NATS.
type agentRequest struct {
	ClientID *string `json:"client_id"`
	AgentID  string  `json:"agent_id"`
}

func (q *agentRequest) claimedClientID() *string { return q.ClientID }

// agentScheduleRequest is get_agent_schedule's body on NATS; hours is
// the query parameter of the HTTP route.
type agentScheduleRequest struct {
	ClientID *string `json:"client_id"`
	AgentID  string  `json:"agent_id"`
	Hours    *int    `json:"hours"`
}

func (q *agentScheduleRequest) claimedClientID() *string { return q.ClientID }

// scheduleBody is GET /agents/{agent_id}/schedule's 200.
type scheduleBody struct {
	Agent   agentBody             `json:"agent"`
	From    string                `json:"from"`
	To      string                `json:"to"`
	Hours   int                   `json:"hours"`
	Tickets []scheduledTicketBody `json:"tickets"`
}

// scheduledTicketBody is one ticket of a schedule. Status is "allocated"
// once an allocator wrote the ticket into the tenant database, "accepted"
// before; absent when the database could not be read (the slot records
// alone still give the schedule). Moves is how often the ticket was moved
// to another agent-minute (absent: never).
type scheduledTicketBody struct {
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
	Status     string `json:"status,omitempty"`
	Moves      int    `json:"moves,omitempty"`
}

// errInvalidAgentID is the 400 of an agent id no agent can have.
func errInvalidAgentID() *apiError {
	return errInvalidField("agent_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
}

// errInvalidHours is the 400 of a schedule window that is not whole
// hours from 1 to 8.
func errInvalidHours() *apiError {
	return errInvalidField("hours", "must be a whole number of hours from 1 to %d (default %d)",
		maxScheduleHours, defaultScheduleHours)
}

// errNotConfigured is a read of agents by a server built without them.
var errNotConfigured = errors.New("ingress: agent reads need Config.Agents and Config.JS")

// get is GET /agents/{agent_id} (get_agent on NATS) for t.
func (r *agentReads) get(ctx context.Context, t tenants.Tenant, agentID string) (answer, error) {
	ag, err := r.agent(ctx, t, agentID)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, body: agentJSON(ag)}, nil
}

// agent reads t's agent agentID: 400 for an id no agent can have, 404
// for an unknown agent or another tenant's (tenants.ErrAgentNotFound:
// each tenant's agents are in its own database, so the two look alike).
func (r *agentReads) agent(ctx context.Context, t tenants.Tenant, agentID string) (tenants.Agent, error) {
	if subjects.ValidID(agentID) != nil {
		return tenants.Agent{}, errInvalidAgentID()
	}
	if r.agents == nil || r.js == nil {
		return tenants.Agent{}, errNotConfigured
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ag, err := r.agents.Get(gctx, t, agentID)
	if err != nil {
		return tenants.Agent{}, fmt.Errorf("reading agent %s: %w", agentID, err)
	}
	return ag, nil
}

// schedule is GET /agents/{agent_id}/schedule (get_agent_schedule on
// NATS) for t: the agent's confirmed tickets from the current minute for
// hours hours, in slot order. The caller has checked hours.
func (r *agentReads) schedule(ctx context.Context, t tenants.Tenant, agentID string, hours int) (answer, error) {
	ag, err := r.agent(ctx, t, agentID)
	if err != nil {
		return answer{}, err
	}
	from := r.now().UTC().Truncate(time.Minute)
	to := from.Add(time.Duration(hours) * time.Hour)
	recs, err := r.confirmed(ctx, t.ID, ag.ID, from, to)
	if err != nil {
		return answer{}, err
	}
	body := scheduleBody{Agent: agentJSON(ag), From: timestamp(from), To: timestamp(to), Hours: hours,
		Tickets: make([]scheduledTicketBody, 0, len(recs))}
	ids := make([]string, 0, len(recs))
	for _, rec := range recs {
		ids = append(ids, rec.Ticket)
	}
	allocated := r.allocated(ctx, t, ids)
	for _, rec := range recs {
		tb := scheduledTicketBody{TicketID: rec.Ticket, TicketType: rec.Type, SlotTime: timestamp(rec.SlotTime),
			Deadline: timestamp(rec.Deadline), Moves: rec.Moves}
		switch {
		case allocated == nil:
		case allocated[rec.Ticket]:
			tb.Status = subjects.StatusAllocated
		default:
			tb.Status = subjects.StatusAccepted
		}
		body.Tickets = append(body.Tickets, tb)
	}
	return answer{status: http.StatusOK, body: body}, nil
}

// allocated is which of ids the tenant database has as allocated, or nil
// when it could not be read: the schedule is the slot records' and is
// answered without the statuses rather than not at all.
func (r *agentReads) allocated(ctx context.Context, t tenants.Tenant, ids []string) map[string]bool {
	if len(ids) == 0 {
		return map[string]bool{}
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	m, err := r.agents.Allocated(gctx, t, ids)
	if err != nil {
		r.logger.Warn("agent schedule without ticket statuses", slog.String("tenant", t.ID), slog.Any("err", err))
		return nil
	}
	return m
}

// confirmed is the newest record of each of agent's keys whose minute is
// in [from, to) and that holds a ticket (confirmed), in minute order. A
// key whose newest record does not decode is left out and logged: anyone
// with access to the bucket can write one, and one bad key must not hide
// the rest of the schedule.
func (r *agentReads) confirmed(ctx context.Context, tenant, agent string, from, to time.Time) ([]subjects.SlotRecord, error) {
	wctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := r.slotBucket(wctx, tenant)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil // no responder has made it yet: no ticket either
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tenants.ErrUnavailable, err)
	}
	// Both ids are checked: the tenant's by the registry, the agent's
	// by agent (and found in the tenant's database).
	filter := tenant + "." + agent + ".*"
	w, err := kv.Watch(wctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%w: watching %s: %w", tenants.ErrUnavailable, filter, err)
	}
	defer func() { _ = w.Stop() }()
	newest := map[string]jetstream.KeyValueEntry{}
	for scanned := 0; ; scanned++ {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-wctx.Done():
			return nil, fmt.Errorf("%w: reading %s: %w", tenants.ErrUnavailable, filter, wctx.Err())
		}
		if e == nil {
			break // every key's newest record delivered
		}
		if scanned >= maxScheduleScan {
			return nil, fmt.Errorf("agent %s of tenant %s has more than %d slot keys", agent, tenant, maxScheduleScan)
		}
		newest[e.Key()] = e // a write during the read replaces the key's older record
	}
	out := make([]subjects.SlotRecord, 0, len(newest))
	for key, e := range newest {
		_, _, minute, err := subjects.ParseSlotKey(key)
		if err != nil || minute.Before(from) || !minute.Before(to) {
			continue
		}
		rec, err := subjects.DecodeSlotRecord(key, e.Value(), subjects.CheckNames)
		if err != nil {
			r.logger.Warn("agent schedule: skipping a slot record", slog.String("tenant", tenant),
				slog.String("key", key), slog.Uint64("revision", e.Revision()), slog.Any("err", err))
			continue
		}
		if rec.State == subjects.SlotConfirmed && rec.HasTicket() {
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b subjects.SlotRecord) int { return a.SlotTime.Compare(b.SlotTime) })
	return out, nil
}

// slotBucket is the slot bucket of tenant's shard, kept once opened. A
// bucket that does not exist yet is an error wrapping
// jetstream.ErrBucketNotFound, looked for again next time.
func (r *agentReads) slotBucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	shard := subjects.SlotShard(tenant, r.shards)
	if kv := r.slots[shard].Load(); kv != nil {
		return *kv, nil
	}
	kv, err := r.js.KeyValue(ctx, subjects.SlotBucket(shard))
	if err != nil {
		return nil, fmt.Errorf("opening slot bucket %s: %w", subjects.SlotBucket(shard), err)
	}
	r.slots[shard].Store(&kv)
	return kv, nil
}

// scheduleHours is the hours query parameter of an HTTP schedule: absent
// is the default; anything but one of the whole numbers 1..8, written
// plainly, is a 400, as is any other parameter.
func scheduleHours(u *url.URL) (int, error) {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return 0, newError(http.StatusBadRequest, codeInvalidField, "query: %s does not parse", quote(u.RawQuery))
	}
	for k := range q {
		if k != "hours" {
			return 0, newError(http.StatusBadRequest, codeUnknownField,
				"query parameter %s: %s takes only hours", quote(k), quote(u.Path))
		}
	}
	vs, ok := q["hours"]
	if !ok {
		return defaultScheduleHours, nil
	}
	if len(vs) != 1 || len(vs[0]) != 1 || vs[0][0] < '1' || vs[0][0] > '0'+maxScheduleHours {
		return 0, errInvalidHours()
	}
	return int(vs[0][0] - '0'), nil
}

// checkHours is the hours member of a NATS schedule request: absent is
// the default.
func checkHours(h *int) (int, error) {
	if h == nil {
		return defaultScheduleHours, nil
	}
	if *h < 1 || *h > maxScheduleHours {
		return 0, errInvalidHours()
	}
	return *h, nil
}

// getAgentHTTP is GET /agents/{agent_id}.
func (a *api) getAgentHTTP(reads *agentReads) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := noQuery(r.URL); err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		ans, err := reads.get(r.Context(), sessionFrom(r.Context()).tenant, chi.URLParam(r, "agent_id"))
		a.respond(w, r, ans, err)
	}
}

// getAgentScheduleHTTP is GET /agents/{agent_id}/schedule.
func (a *api) getAgentScheduleHTTP(reads *agentReads) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		agentID := chi.URLParam(r, "agent_id")
		if subjects.ValidID(agentID) != nil {
			writeError(w, r, a.logger, errInvalidAgentID())
			return
		}
		hours, err := scheduleHours(r.URL)
		if err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		ans, err := reads.schedule(r.Context(), sessionFrom(r.Context()).tenant, agentID, hours)
		a.respond(w, r, ans, err)
	}
}
