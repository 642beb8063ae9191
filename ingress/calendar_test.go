package ingress

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
)

// Tests of GET /calendar through the real server (the schedule env: real
// JetStream, Postgres and ETA responder).

// calendarMinute is one booked minute of a calendar answer.
type calendarMinute struct {
	agent, id, typ string
	minute         time.Time
	deadline       time.Time
}

// calendarOf checks a calendar answer's frame and returns its agents'
// ids in order and every booked minute.
func calendarOf(t *testing.T, body map[string]any, hours int) ([]string, []calendarMinute) {
	t.Helper()
	from := rfc3339UTC(t, "from", body["from"])
	to := rfc3339UTC(t, "to", body["to"])
	now := time.Now()
	if !from.Equal(from.Truncate(time.Minute)) || from.After(now) || now.Sub(from) > 2*time.Minute ||
		!to.Equal(from.Add(time.Duration(hours)*time.Hour)) || body["hours"] != float64(hours) || body["truncated"] != false {
		t.Fatalf("calendar frame %v, want the current minute for %d h, not truncated", body, hours)
	}
	var agents []string
	var minutes []calendarMinute
	for _, raw := range body["agents"].([]any) {
		ag := raw.(map[string]any)
		id, _ := ag["agent_id"].(string)
		if ag["name"] != "agent" || ag["agent_status"] != subjects.AgentAvailable {
			t.Errorf("calendar agent %v", ag)
		}
		agents = append(agents, id)
		list, ok := ag["minutes"].([]any)
		if !ok {
			t.Fatalf("agent %s: minutes %v, want a list", id, ag["minutes"])
		}
		var last time.Time
		for _, rm := range list {
			m := rm.(map[string]any)
			cm := calendarMinute{agent: id, minute: rfc3339UTC(t, "minute", m["minute"]), deadline: rfc3339UTC(t, "deadline", m["deadline"])}
			cm.id, _ = m["ticket_id"].(string)
			cm.typ, _ = m["ticket_type"].(string)
			if cm.minute.Before(from) || !cm.minute.Before(to) || !cm.minute.After(last) {
				t.Errorf("minute %v of agent %s outside [%v, %v) or out of order", cm.minute, id, from, to)
			}
			last = cm.minute
			minutes = append(minutes, cm)
		}
	}
	return agents, minutes
}

// TestCalendar: every agent of the tenant, in the list's order, with the minute
// each of its tickets holds (over HTTP and NATS alike), typed and with
// its deadline; no other tenant's agent or ticket; a cancelled ticket's
// minute is free again; hours narrows the window.
func TestCalendar(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, agent1 := e.tenantWithAgent(t, "Calendar A", "ops@cal-a.example")
	agent2 := e.addAgent(t, a)
	b, agentB := e.tenantWithAgent(t, "Calendar B", "ops@cal-b.example")

	want := map[string]map[string]any{} // ticket id: its create answer
	first := e.createWhenReady(t, a, subjects.Gold)
	want[first["ticket_id"].(string)] = first
	for _, typ := range []string{subjects.Silver, subjects.Bronze, subjects.Gold, subjects.Bronze} {
		resp := e.create(t, a, typ, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", typ, resp.status, resp.raw)
		}
		want[resp.body["ticket_id"].(string)] = resp.body
	}
	viaNATS := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Silver}, nil)
	if viaNATS["code"] != float64(http.StatusCreated) {
		t.Fatalf("create_ticket over NATS: %v", viaNATS)
	}
	want[viaNATS["ticket_id"].(string)] = viaNATS
	other := e.createWhenReady(t, b, subjects.Gold)

	agents, minutes := calendarOf(t, e.must(t, http.StatusOK, request{method: "GET", path: "/calendar", token: a.token}), 8)
	// Oldest first, then by id: the env's agents clock is frozen.
	wantAgents := []string{agent1, agent2}
	slices.Sort(wantAgents)
	if !slices.Equal(agents, wantAgents) {
		t.Fatalf("calendar agents %v, want %v", agents, wantAgents)
	}
	if len(minutes) != len(want) {
		t.Fatalf("calendar has %d booked minutes %+v, want the %d tickets created", len(minutes), minutes, len(want))
	}
	for _, m := range minutes {
		acc, ok := want[m.id]
		if !ok {
			t.Fatalf("calendar minute %+v is no ticket of the tenant (tenant B's is %v)", m, other["ticket_id"])
		}
		if m.typ != acc["ticket_type"] || m.agent != acc["agent_id"] ||
			!m.minute.Equal(rfc3339UTC(t, "slot_time", acc["slot_time"])) ||
			!m.deadline.Equal(rfc3339UTC(t, "deadline", acc["deadline"])) {
			t.Errorf("calendar minute %+v, the ticket was created as %v", m, acc)
		}
	}

	// Tenant B sees its own agent and ticket only.
	agentsB, minutesB := calendarOf(t, e.must(t, http.StatusOK, request{method: "GET", path: "/calendar?hours=8", token: b.token}), 8)
	if !slices.Equal(agentsB, []string{agentB}) || len(minutesB) != 1 || minutesB[0].id != other["ticket_id"] {
		t.Errorf("tenant B's calendar: agents %v minutes %+v, want %s with %v", agentsB, minutesB, agentB, other["ticket_id"])
	}

	// A cancelled ticket's minute is free at once; one hour still holds
	// the rest (they are minutes from now).
	if resp := e.cancel(t, a, first["ticket_id"].(string)); resp.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", resp.status, resp.raw)
	}
	_, short := calendarOf(t, e.must(t, http.StatusOK, request{method: "GET", path: "/calendar?hours=1", token: a.token}), 1)
	if len(short) != len(want)-1 || slices.ContainsFunc(short, func(m calendarMinute) bool { return m.id == first["ticket_id"] }) {
		t.Errorf("after the cancel the 1 h calendar has %+v, want the %d others", short, len(want)-1)
	}
}

// TestCalendarEmptyAndBadInput: a tenant without agents has an empty
// list; hours outside 1..8, not a plain number, given twice, or any
// other parameter is a 400 in the project's error body, and the slot
// bucket is untouched; no token or a bad one is 401.
func TestCalendarEmptyAndBadInput(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a := e.openAccount(t, "Calendar Empty", "ops@cal-empty.example")
	empty := e.must(t, http.StatusOK, request{method: "GET", path: "/calendar", token: a.token})
	if agents, ok := empty["agents"].([]any); !ok || len(agents) != 0 {
		t.Fatalf("calendar of a tenant without agents: %v", empty)
	}

	b, _ := e.tenantWithAgent(t, "Calendar Bad", "ops@cal-bad.example")
	e.createWhenReady(t, b, subjects.Gold)
	before := e.slotRecords(t, b.id)
	for _, tc := range []struct{ query, code string }{
		{"?hours=0", codeInvalidField}, {"?hours=9", codeInvalidField}, {"?hours=x", codeInvalidField},
		{"?hours=1&hours=2", codeInvalidField}, {"?hours=", codeInvalidField}, {"?hours=08", codeInvalidField},
		{"?hours=-1", codeInvalidField}, {"?hours=%zz", codeInvalidField}, {"?days=1", codeUnknownField},
		{"?hours=2&agent_id=x", codeUnknownField},
	} {
		resp := e.do(t, request{method: "GET", path: "/calendar" + tc.query, token: b.token})
		if resp.status != http.StatusBadRequest || resp.body["error"] != tc.code || resp.body["status"] != "error" ||
			resp.body["message"] == "" {
			t.Errorf("GET /calendar%s: %d %s, want 400 %s", tc.query, resp.status, resp.raw, tc.code)
		}
	}
	if after := e.slotRecords(t, b.id); after != before {
		t.Errorf("bad calendar requests changed the slot records: %d, then %d", before, after)
	}
	for _, tok := range []string{"", "not-a-token"} {
		resp := e.do(t, request{method: "GET", path: "/calendar", token: tok})
		if resp.status != http.StatusUnauthorized || resp.body["error"] != codeUnauthorized {
			t.Errorf("GET /calendar with token %q: %d %s, want 401", tok, resp.status, resp.raw)
		}
	}
}

// TestCalendarTruncated: a tenant with more agents than a calendar reads
// gets the first ones, in list order, and "truncated".
func TestCalendarTruncated(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a, _ := e.tenantWithAgent(t, "Calendar Many", "ops@cal-many.example")
	e.addAgent(t, a)
	e.addAgent(t, a)
	ctx := testkit.Context(t, 20*time.Second)
	tenant, err := e.registry.Get(ctx, a.id)
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.agents.List(ctx, tenant)
	if err != nil || len(list) != 3 {
		t.Fatalf("agents %v, %v", list, err)
	}
	reads := newAgentReads(e.config(nil))
	reads.calendarAgents = 2
	ans, err := reads.calendar(ctx, tenant, 2)
	if err != nil {
		t.Fatal(err)
	}
	body := ans.body.(calendarBody)
	if !body.Truncated || len(body.Agents) != 2 || body.Agents[0].AgentID != list[0].ID || body.Agents[1].AgentID != list[1].ID ||
		body.Hours != 2 {
		t.Errorf("calendar of 3 agents read 2 at most: %+v", body)
	}
	reads.calendarAgents = 3
	if ans, err := reads.calendar(ctx, tenant, 2); err != nil || ans.body.(calendarBody).Truncated || len(ans.body.(calendarBody).Agents) != 3 {
		t.Errorf("calendar of 3 agents read 3 at most: %+v, %v", ans.body, err)
	}
}
