package ingress

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
)

// Tests of GET /agents/{agent_id}, GET /agents/{agent_id}/schedule and
// their NATS operations through the real server: the env's routers and
// NATS API over embedded JetStream and Postgres, with the real ETA
// responder (and, for the statuses, allocator) of package workers.

// scheduleEnv is a ticket env whose ticket clock runs a few minutes ahead
// of the wall clock, which the schedule's window starts from: every
// ticket the test creates is then inside the window even if the test
// crosses a minute boundary (with the frozen clock at the wall clock, a
// ticket in the first minute would fall before the window a minute
// later).
func newScheduleEnv(t *testing.T) *ticketEnv {
	t.Helper()
	e := newTicketEnv(t, ticketEnvOptions{})
	e.clock.Set(time.Now().Add(5 * time.Minute))
	return e
}

// scheduled is one ticket of a schedule answer.
type scheduled struct {
	id, typ, status string
	slot, deadline  time.Time
	moves           float64
}

// scheduleOf checks a schedule answer's frame (agent, window, hours) and
// returns its tickets, checking they are in slot order.
func scheduleOf(t *testing.T, body map[string]any, agent string, hours int) []scheduled {
	t.Helper()
	ag, _ := body["agent"].(map[string]any)
	if ag["agent_id"] != agent {
		t.Fatalf("schedule of %s names agent %v", agent, body["agent"])
	}
	from := rfc3339UTC(t, "from", body["from"])
	to := rfc3339UTC(t, "to", body["to"])
	now := time.Now()
	if !from.Equal(from.Truncate(time.Minute)) || from.After(now) || now.Sub(from) > 2*time.Minute ||
		!to.Equal(from.Add(time.Duration(hours)*time.Hour)) || body["hours"] != float64(hours) {
		t.Fatalf("schedule window from %v to %v (hours %v), want the current minute for %d h", from, to, body["hours"], hours)
	}
	list, ok := body["tickets"].([]any)
	if !ok {
		t.Fatalf("schedule tickets %v, want a list", body["tickets"])
	}
	out := make([]scheduled, 0, len(list))
	for _, raw := range list {
		m := raw.(map[string]any)
		var s scheduled
		s.id, _ = m["ticket_id"].(string)
		s.typ, _ = m["ticket_type"].(string)
		s.status, _ = m["status"].(string)
		s.moves, _ = m["moves"].(float64)
		s.slot = rfc3339UTC(t, "slot_time", m["slot_time"])
		s.deadline = rfc3339UTC(t, "deadline", m["deadline"])
		if s.slot.Before(from) || !s.slot.Before(to) {
			t.Errorf("ticket %s at %v outside the window [%v, %v)", s.id, s.slot, from, to)
		}
		if n := len(out); n > 0 && !out[n-1].slot.Before(s.slot) {
			t.Errorf("ticket %s at %v listed after %s at %v", s.id, s.slot, out[n-1].id, out[n-1].slot)
		}
		out = append(out, s)
	}
	return out
}

func scheduleIDs(list []scheduled) []string {
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.id
	}
	return ids
}

func (e *ticketEnv) schedule(t *testing.T, a account, agent, query string) map[string]any {
	t.Helper()
	return e.must(t, http.StatusOK, request{method: "GET", path: "/agents/" + agent + "/schedule" + query, token: a.token})
}

// TestAgentSchedule: an agent's tickets in slot order with their
// deadlines, over HTTP and NATS alike; a cancelled ticket is gone; an
// agent with no ticket has an empty list; allocated once a worker wrote
// the ticket.
func TestAgentSchedule(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, agent := e.tenantWithAgent(t, "Initech", "ops@initech.example")

	// Three tickets on the only agent: the responder gives them its next
	// free minutes.
	accepted := []map[string]any{e.createWhenReady(t, a, subjects.Gold)}
	for _, typ := range []string{subjects.Silver, subjects.Gold} {
		resp := e.create(t, a, typ, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", typ, resp.status, resp.raw)
		}
		accepted = append(accepted, resp.body)
	}
	slices.SortFunc(accepted, func(x, y map[string]any) int {
		return strings.Compare(x["slot_time"].(string), y["slot_time"].(string))
	})
	idle := e.addAgent(t, a) // after the creates: no ticket is on it

	got := scheduleOf(t, e.schedule(t, a, agent, ""), agent, 8)
	if len(got) != len(accepted) {
		t.Fatalf("schedule lists %v, want the %d tickets created", scheduleIDs(got), len(accepted))
	}
	for i, acc := range accepted {
		s := got[i]
		if s.id != acc["ticket_id"] || s.typ != acc["ticket_type"] || s.status != subjects.StatusAccepted || s.moves != 0 ||
			!s.slot.Equal(rfc3339UTC(t, "slot_time", acc["slot_time"])) ||
			!s.deadline.Equal(rfc3339UTC(t, "deadline", acc["deadline"])) {
			t.Errorf("schedule entry %d is %+v, want the ticket created as %v", i, s, acc)
		}
	}

	// GET /agents/{id} is the agent as the list shows it, and the
	// schedule's agent too.
	one := e.must(t, http.StatusOK, request{method: "GET", path: "/agents/" + agent, token: a.token})
	list := e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: a.token})
	var listed map[string]any
	for _, ag := range list["agents"].([]any) {
		if m := ag.(map[string]any); m["agent_id"] == agent {
			listed = m
		}
	}
	if !reflect.DeepEqual(one, listed) || one["agent_status"] != subjects.AgentAvailable || one["name"] != "agent" {
		t.Errorf("GET /agents/%s: %v, the list has %v", agent, one, listed)
	}

	// The same over NATS.
	overNATS := e.natsCall(t, a.id, subjects.OpGetAgent, map[string]string{"agent_id": agent}, nil)
	if overNATS["code"] != float64(http.StatusOK) {
		t.Fatalf("get_agent: %v", overNATS)
	}
	delete(overNATS, "code")
	if !reflect.DeepEqual(overNATS, one) {
		t.Errorf("get_agent %v, over HTTP %v", overNATS, one)
	}
	sched := e.natsCall(t, a.id, subjects.OpGetAgentSchedule, map[string]any{"client_id": a.id, "agent_id": agent, "hours": 2}, nil)
	if sched["code"] != float64(http.StatusOK) {
		t.Fatalf("get_agent_schedule: %v", sched)
	}
	if viaNATS := scheduleOf(t, sched, agent, 2); !reflect.DeepEqual(viaNATS, got) {
		t.Errorf("get_agent_schedule lists %+v, over HTTP %+v", viaNATS, got)
	}

	// One hour: the window is shorter, the tickets (minutes from now) the same.
	if short := scheduleOf(t, e.schedule(t, a, agent, "?hours=1"), agent, 1); !reflect.DeepEqual(short, got) {
		t.Errorf("schedule for 1 h lists %+v, want %+v", short, got)
	}

	// An agent with no ticket: an empty list, not null.
	empty := e.schedule(t, a, idle, "?hours=8")
	if l := scheduleOf(t, empty, idle, 8); len(l) != 0 {
		t.Errorf("schedule of an idle agent: %+v", l)
	}
	if !strings.Contains(jsonBody(empty["tickets"]), "[]") {
		t.Errorf("schedule of an idle agent: tickets %v, want []", empty["tickets"])
	}

	// A cancelled ticket leaves the schedule at once.
	cancelled := got[1].id
	if resp := e.cancel(t, a, cancelled); resp.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", resp.status, resp.raw)
	}
	after := scheduleOf(t, e.schedule(t, a, agent, ""), agent, 8)
	if want := []string{got[0].id, got[2].id}; !slices.Equal(scheduleIDs(after), want) {
		t.Errorf("after cancelling %s the schedule lists %v, want %v", cancelled, scheduleIDs(after), want)
	}

	// Once the allocator has written them, the tickets are allocated.
	e.startAllocator(t)
	testkit.Eventually(t, 30*time.Second, func() bool {
		l := scheduleOf(t, e.schedule(t, a, agent, ""), agent, 8)
		return len(l) == 2 && l[0].status == subjects.StatusAllocated && l[1].status == subjects.StatusAllocated
	}, "the schedule's tickets to be allocated")
}

// TestAgentScheduleTenantIsolation: another tenant's agent is 404 on both
// routes and both NATS operations (never 403: its existence does not
// leak), and no schedule lists another tenant's ticket.
func TestAgentScheduleTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, agentA := e.tenantWithAgent(t, "Soylent", "ops@soylent.example")
	b, agentB := e.tenantWithAgent(t, "Tyrell", "ops@tyrell.example")
	ticketA := e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)
	ticketB := e.createWhenReady(t, b, subjects.Gold)["ticket_id"].(string)

	for _, path := range []string{"/agents/" + agentA, "/agents/" + agentA + "/schedule", "/agents/" + agentA + "/schedule?hours=3",
		"/agents/no-such-agent", "/agents/no-such-agent/schedule"} {
		resp := e.do(t, request{method: "GET", path: path, token: b.token})
		if resp.status != http.StatusNotFound || resp.body["error"] != codeAgentNotFound {
			t.Errorf("GET %s as another tenant: %d %s, want 404 %s", path, resp.status, resp.raw, codeAgentNotFound)
		}
	}
	for _, op := range []string{subjects.OpGetAgent, subjects.OpGetAgentSchedule} {
		for _, agent := range []string{agentA, "no-such-agent"} {
			got := e.natsCall(t, b.id, op, map[string]string{"agent_id": agent}, nil)
			if got["code"] != float64(http.StatusNotFound) || got["error"] != codeAgentNotFound {
				t.Errorf("%s of %s on b's subject: %v, want 404 %s", op, agent, got, codeAgentNotFound)
			}
		}
		// A body that names a (the agent's tenant) on b's subject is
		// refused as every operation refuses it.
		got := e.natsCall(t, b.id, op, map[string]string{"client_id": a.id, "agent_id": agentA}, nil)
		if got["code"] != float64(http.StatusForbidden) {
			t.Errorf("%s naming a on b's subject: %v, want 403", op, got)
		}
	}

	// Each tenant's schedule lists its own ticket only.
	if l := scheduleIDs(scheduleOf(t, e.schedule(t, a, agentA, ""), agentA, 8)); !slices.Equal(l, []string{ticketA}) {
		t.Errorf("a's schedule lists %v, want [%s]", l, ticketA)
	}
	if l := scheduleIDs(scheduleOf(t, e.schedule(t, b, agentB, ""), agentB, 8)); !slices.Equal(l, []string{ticketB}) {
		t.Errorf("b's schedule lists %v, want [%s]", l, ticketB)
	}
	sched := e.natsCall(t, b.id, subjects.OpGetAgentSchedule, map[string]string{"agent_id": agentB}, nil)
	if l := scheduleIDs(scheduleOf(t, sched, agentB, 8)); !slices.Equal(l, []string{ticketB}) {
		t.Errorf("b's schedule over NATS lists %v, want [%s]", l, ticketB)
	}
}

// TestAgentScheduleBadInput: every bad parameter is a clear 400 naming
// it, on HTTP and NATS, and nothing is written.
func TestAgentScheduleBadInput(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, agent := e.tenantWithAgent(t, "Hooli", "ops@hooli.example")
	ticket := e.createWhenReady(t, a, subjects.Silver)["ticket_id"].(string)
	records, keys := e.slotRecords(t, a.id), len(e.slotKeys(t, a.id))
	before := e.schedule(t, a, agent, "")

	path := "/agents/" + agent + "/schedule"
	for _, tt := range []struct {
		name, path, code, mention string
	}{
		{"hours 0", path + "?hours=0", codeInvalidField, "hours"},
		{"hours 9", path + "?hours=9", codeInvalidField, "hours"},
		{"hours x", path + "?hours=x", codeInvalidField, "hours"},
		{"hours 1.5", path + "?hours=1.5", codeInvalidField, "hours"},
		{"hours empty", path + "?hours=", codeInvalidField, "hours"},
		{"hours -1", path + "?hours=-1", codeInvalidField, "hours"},
		{"hours 08", path + "?hours=08", codeInvalidField, "hours"},
		{"hours twice", path + "?hours=1&hours=2", codeInvalidField, "hours"},
		{"hours 1e0", path + "?hours=1e0", codeInvalidField, "hours"},
		{"hours huge", path + "?hours=" + strings.Repeat("9", 40), codeInvalidField, "hours"},
		{"unknown parameter", path + "?days=1", codeUnknownField, "days"},
		{"bad escape", path + "?hours=%zz", codeInvalidField, "query"},
		{"malformed agent id", "/agents/Not.An.Id/schedule", codeInvalidField, "agent_id"},
		{"malformed agent id, get", "/agents/Not.An.Id", codeInvalidField, "agent_id"},
		{"long agent id", "/agents/" + strings.Repeat("a", subjects.MaxIDLen+1) + "/schedule", codeInvalidField, "agent_id"},
		{"agent with a query", "/agents/" + agent + "?hours=1", codeUnknownField, "hours"},
	} {
		resp := e.do(t, request{method: "GET", path: tt.path, token: a.token})
		msg, _ := resp.body["message"].(string)
		if resp.status != http.StatusBadRequest || resp.body["error"] != tt.code || !strings.Contains(msg, tt.mention) {
			t.Errorf("%s: %d %s, want 400 %s about %s", tt.name, resp.status, resp.raw, tt.code, tt.mention)
		}
	}
	for _, tt := range []struct {
		name, op, body, code, mention string
	}{
		{"hours 0", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":0}`, codeInvalidField, "hours"},
		{"hours 9", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":9}`, codeInvalidField, "hours"},
		{"hours x", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":"x"}`, codeInvalidField, "hours"},
		{"hours 1.5", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":1.5}`, codeInvalidField, "hours"},
		{"hours string", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":"8"}`, codeInvalidField, "hours"},
		{"hours null", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","hours":null}`, codeInvalidField, "hours"},
		{"unknown field", subjects.OpGetAgentSchedule, `{"agent_id":"` + agent + `","days":1}`, codeUnknownField, "days"},
		{"no agent", subjects.OpGetAgentSchedule, `{"hours":1}`, codeInvalidField, "agent_id"},
		{"malformed agent", subjects.OpGetAgentSchedule, `{"agent_id":"A.*"}`, codeInvalidField, "agent_id"},
		{"malformed agent, get", subjects.OpGetAgent, `{"agent_id":"A.*"}`, codeInvalidField, "agent_id"},
		{"agent number", subjects.OpGetAgent, `{"agent_id":7}`, codeInvalidField, "agent_id"},
		{"get with hours", subjects.OpGetAgent, `{"agent_id":"` + agent + `","hours":1}`, codeUnknownField, "hours"},
	} {
		got := e.natsCall(t, a.id, tt.op, tt.body, nil)
		msg, _ := got["message"].(string)
		if got["code"] != float64(http.StatusBadRequest) || got["error"] != tt.code || !strings.Contains(msg, tt.mention) {
			t.Errorf("NATS %s: %v, want 400 %s about %s", tt.name, got, tt.code, tt.mention)
		}
	}

	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("slot records of a: %d -> %d", records, n)
	}
	if n := len(e.slotKeys(t, a.id)); n != keys {
		t.Errorf("slot keys of a: %d -> %d", keys, n)
	}
	if after := e.schedule(t, a, agent, ""); !reflect.DeepEqual(after["tickets"], before["tickets"]) {
		t.Errorf("schedule after the bad requests %v, before %v", after["tickets"], before["tickets"])
	}
	if got := e.getTicket(t, a, ticket); got.body["status"] != subjects.StatusAccepted {
		t.Errorf("ticket after the bad requests: %s", got.raw)
	}
}

// TestAgentScheduleSkipsBadRecords: a record written by hand into the
// agent's minutes (garbage, or a ticket of another tenant under its key)
// is left out; the agent's real tickets are still listed; records outside
// the window are not.
func TestAgentScheduleSkipsBadRecords(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, agent := e.tenantWithAgent(t, "Globex", "ops@globex.example")
	b, _ := e.tenantWithAgent(t, "Vandelay", "ops@vandelay.example")
	ticket := e.createWhenReady(t, a, subjects.Gold)
	other := e.createWhenReady(t, b, subjects.Gold)

	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(a.id, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatalf("slot bucket: %v", err)
	}
	slot := rfc3339UTC(t, "slot_time", ticket["slot_time"])
	forged := jsonBody(map[string]any{"state": "confirmed", "tenant": b.id, "agent": agent,
		"slot_time": other["slot_time"], "type": "GOLD", "created_at": other["created_at"], "ticket": other["ticket_id"],
		"deadline": other["deadline"]})
	for key, value := range map[string]string{
		subjects.SlotKey(a.id, agent, slot.Add(30*time.Minute)): `{"state":`,
		subjects.SlotKey(a.id, agent, slot.Add(31*time.Minute)): forged,
	} {
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	if l := scheduleIDs(scheduleOf(t, e.schedule(t, a, agent, ""), agent, 8)); !slices.Equal(l, []string{ticket["ticket_id"].(string)}) {
		t.Errorf("schedule with forged records lists %v, want only %s", l, ticket["ticket_id"])
	}

	// Well-formed records of the agent around the window: only those in
	// it are listed, in order (the window starts at the current minute).
	now := time.Now().UTC().Truncate(time.Minute)
	put := func(minute time.Time) string {
		t.Helper()
		id, err := subjects.NewSlotTicketID(agent, minute, subjects.NewTicketNonce())
		if err != nil {
			t.Fatal(err)
		}
		rec := subjects.SlotRecord{State: subjects.SlotConfirmed, Tenant: a.id, Agent: agent, SlotTime: minute,
			Type: subjects.Bronze, CreatedAt: minute.Add(-time.Hour), Ticket: id, Deadline: minute.Add(7 * time.Hour)}
		if _, err := kv.Put(ctx, subjects.SlotKey(a.id, agent, minute), []byte(jsonBody(rec))); err != nil {
			t.Fatalf("put: %v", err)
		}
		return id
	}
	put(now.Add(-time.Hour))
	put(now.Add(8*time.Hour + 10*time.Minute))
	inTwo := put(now.Add(2 * time.Hour))
	if l := scheduleIDs(scheduleOf(t, e.schedule(t, a, agent, "?hours=8"), agent, 8)); !slices.Equal(l, []string{ticket["ticket_id"].(string), inTwo}) {
		t.Errorf("8 h schedule lists %v, want [%s %s]", l, ticket["ticket_id"], inTwo)
	}
	if l := scheduleIDs(scheduleOf(t, e.schedule(t, a, agent, "?hours=1"), agent, 1)); !slices.Equal(l, []string{ticket["ticket_id"].(string)}) {
		t.Errorf("1 h schedule lists %v, want [%s]", l, ticket["ticket_id"])
	}
}

// TestScheduleHours is the hours parameter alone.
func TestScheduleHours(t *testing.T) {
	for raw, want := range map[string]int{"": 8, "hours=1": 1, "hours=8": 8, "hours=5": 5} {
		got, err := scheduleHours(&url.URL{Path: "/agents/x/schedule", RawQuery: raw})
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", raw, got, err, want)
		}
	}
	for _, raw := range []string{"hours=0", "hours=9", "hours=x", "hours=1.5", "hours=", "hours=+1", "hours=1&hours=1", "h=1", "hours=%"} {
		if got, err := scheduleHours(&url.URL{Path: "/agents/x/schedule", RawQuery: raw}); err == nil {
			t.Errorf("%q: %d, want an error", raw, got)
		}
	}
}

// TestAgentScheduleFollowsAMove: when an agent goes away, its tickets
// leave its schedule and appear on the agent that took them, with their
// moves and their unchanged deadlines, where GET /tickets/{id} shows them.
func TestAgentScheduleFollowsAMove(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, gone := e.tenantWithAgent(t, "Wayne", "ops@wayne.example")
	accepted := []map[string]any{e.createWhenReady(t, a, subjects.Gold)}
	for range 2 {
		resp := e.create(t, a, subjects.Gold, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.status, resp.raw)
		}
		accepted = append(accepted, resp.body)
	}
	stays := e.addAgent(t, a)
	if l := scheduleOf(t, e.schedule(t, a, stays, ""), stays, 8); len(l) != 0 {
		t.Fatalf("schedule of the new agent before the re-plan: %+v", l)
	}

	off := e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + gone, token: a.token,
		body: jsonBody(map[string]string{"agent_status": subjects.AgentUnavailable})})
	if replan, _ := off["replan"].(map[string]any); replan["moved"] != float64(len(accepted)) {
		t.Fatalf("PATCH unavailable: replan %v, want %d moved", off["replan"], len(accepted))
	}
	if ag := e.must(t, http.StatusOK, request{method: "GET", path: "/agents/" + gone, token: a.token}); ag["agent_status"] != subjects.AgentUnavailable {
		t.Errorf("GET /agents/%s after the PATCH: %v", gone, ag)
	}
	if l := scheduleOf(t, e.schedule(t, a, gone, ""), gone, 8); len(l) != 0 {
		t.Errorf("schedule of the agent gone: %+v, want none", l)
	}
	moved := scheduleOf(t, e.schedule(t, a, stays, ""), stays, 8)
	deadlines := map[string]time.Time{}
	for _, acc := range accepted {
		deadlines[acc["ticket_id"].(string)] = rfc3339UTC(t, "deadline", acc["deadline"])
	}
	if len(moved) != len(accepted) {
		t.Fatalf("schedule of the agent that stays: %+v, want the %d tickets moved", moved, len(accepted))
	}
	for _, s := range moved {
		got := e.getTicket(t, a, s.id)
		if d, ok := deadlines[s.id]; !ok || !s.deadline.Equal(d) || s.moves != 1 || s.typ != subjects.Gold ||
			got.body["agent_id"] != stays || got.body["slot_time"] != timestamp(s.slot) {
			t.Errorf("moved ticket %+v; GET shows %s", s, got.raw)
		}
	}
}

// TestAgentScheduleBoundsTheScan: an agent with more slot keys than any
// agent can have (written by hand) is refused with a 500 rather than read
// without end. Not parallel: it lowers the bound for its own run (the
// parallel tests of the package start after it).
func TestAgentScheduleBoundsTheScan(t *testing.T) {
	// Set before the env starts its goroutines and restored after it
	// stopped them (cleanups run last first).
	saved := maxScheduleScan
	maxScheduleScan = 3
	t.Cleanup(func() { maxScheduleScan = saved })
	e := newScheduleEnv(t)
	a, agent := e.tenantWithAgent(t, "Oscorp", "ops@oscorp.example")
	e.createWhenReady(t, a, subjects.Gold)
	if l := scheduleOf(t, e.schedule(t, a, agent, ""), agent, 8); len(l) != 1 {
		t.Fatalf("schedule under the bound: %+v", l)
	}
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(a.id, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatalf("slot bucket: %v", err)
	}
	past := time.Now().UTC().Truncate(time.Minute).Add(-3 * time.Hour)
	for i := range 3 {
		if _, err := kv.Put(ctx, subjects.SlotKey(a.id, agent, past.Add(time.Duration(i)*time.Minute)), []byte(`{}`)); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	resp := e.do(t, request{method: "GET", path: "/agents/" + agent + "/schedule", token: a.token})
	if resp.status != http.StatusInternalServerError || resp.body["error"] != codeInternal {
		t.Errorf("schedule over the bound: %d %s, want 500 %s", resp.status, resp.raw, codeInternal)
	}
	got := e.natsCall(t, a.id, subjects.OpGetAgentSchedule, map[string]string{"agent_id": agent}, nil)
	if got["code"] != float64(http.StatusInternalServerError) {
		t.Errorf("get_agent_schedule over the bound: %v, want 500", got)
	}
}
