package ingress

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"tms/subjects"
)

// The HTTP and NATS faces of feasibility admission, against a scripted
// responder (a real NATS peer on the tenant's ETA subject that answers
// canned replies): the answers' shapes, authentication, the requests
// sent, routing and bad input. feasible_e2e_test.go runs the same
// endpoints against the real responder.

// feasibleETATimeout is short, so the tests of an unanswered request
// finish soon; the scripted responder answers at once.
const feasibleETATimeout = time.Second

// wantJSON fails the test unless got (a decoded answer) is want, built
// from Go values as the JSON would decode.
func wantJSON(t *testing.T, what string, got map[string]any, want map[string]any) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(jsonBody(want)), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		t.Errorf("%s answered\n%s\nwant\n%s", what, jsonBody(got), jsonBody(w))
	}
}

func TestCapacity(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: feasibleETATimeout})
	a, agent := e.tenantWithAgent(t, "Capacity", "capacity@example.com")
	b := e.openAccount(t, "Other", "other-capacity@example.com")
	ra, rb := newScriptedResponder(t, e, a.id), newScriptedResponder(t, e, b.id)
	now := subjects.Stamp(e.clock.Now())
	slot := now.Truncate(time.Minute).Add(time.Minute)
	ra.answers(subjects.ETACapacity, &subjects.ETAReply{Code: subjects.ETAOK, Capacity: []subjects.TypeCapacity{
		{Type: subjects.Bronze, Available: 400, Agent: agent, SlotTime: slot.Add(3 * time.Hour)},
		{Type: subjects.Gold, Available: 0},
		{Type: subjects.Silver, Available: 7, Agent: agent, SlotTime: slot, Moves: 2},
	}})
	rb.answers(subjects.ETACapacity, &subjects.ETAReply{Code: subjects.ETAOK, Capacity: []subjects.TypeCapacity{
		{Type: subjects.Gold}, {Type: subjects.Silver}, {Type: subjects.Bronze},
	}})
	want := map[string]any{"as_of": timestamp(now), "capacity": []any{
		map[string]any{"ticket_type": "GOLD", "available": 0, "moves": 0},
		map[string]any{"ticket_type": "SILVER", "available": 7, "slot_time": timestamp(slot), "agent_id": agent, "moves": 2},
		map[string]any{"ticket_type": "BRONZE", "available": 400, "slot_time": timestamp(slot.Add(3 * time.Hour)), "agent_id": agent, "moves": 0},
	}}

	got := e.must(t, http.StatusOK, request{method: "GET", path: "/capacity", token: a.token})
	wantJSON(t, "GET /capacity", got, want)
	req := ra.next(t)
	if req.Op != subjects.ETACapacity || req.Tenant != a.id || !req.CreatedAt.Equal(now) || req.AgentsRev != e.agents.Revision(a.id) ||
		req.AgentsRev == 0 || req.Type != "" || req.Nonce != "" {
		t.Errorf("GET /capacity asked %+v, want capacity for %s at %s with agents_rev %d", req, a.id, now, e.agents.Revision(a.id))
	}
	// The same over NATS, with or without the subject's client_id.
	for _, body := range []string{`{}`, jsonBody(map[string]string{"client_id": a.id})} {
		out := e.natsCall(t, a.id, subjects.OpGetCapacity, body, nil)
		want["code"] = http.StatusOK
		wantJSON(t, "NATS get_capacity "+body, out, want)
		delete(want, "code")
		ra.next(t)
	}

	// Another tenant's token sees its own capacity, asked on its own
	// subject: never A's.
	gotB := e.must(t, http.StatusOK, request{method: "GET", path: "/capacity", token: b.token})
	if list, _ := gotB["capacity"].([]any); len(list) != 3 || list[0].(map[string]any)["available"] != 0.0 {
		t.Errorf("tenant B's GET /capacity = %v", gotB)
	}
	if req := rb.next(t); req.Tenant != b.id {
		t.Errorf("tenant B's capacity asked for %q", req.Tenant)
	}

	for _, c := range []struct {
		name string
		req  request
		code int
		err  string
	}{
		{"no token", request{method: "GET", path: "/capacity"}, 401, codeUnauthorized},
		{"a bad token", request{method: "GET", path: "/capacity", token: "nope"}, 401, codeUnauthorized},
		{"a query parameter", request{method: "GET", path: "/capacity?ticket_type=GOLD", token: a.token}, 400, codeUnknownField},
		{"an empty parameter", request{method: "GET", path: "/capacity?", token: a.token}, 200, ""},
		{"a broken query", request{method: "GET", path: "/capacity?%zz", token: a.token}, 400, codeInvalidField},
		{"POST", request{method: "POST", path: "/capacity", token: a.token, body: `{}`}, 405, codeMethodNotAllowed},
		{"a subpath", request{method: "GET", path: "/capacity/GOLD", token: a.token}, 404, codeNotFound},
	} {
		resp := e.do(t, c.req)
		if resp.status != c.code || (c.err != "" && resp.body["error"] != c.err) {
			t.Errorf("%s: %d %s, want %d %s", c.name, resp.status, resp.raw, c.code, c.err)
		}
		if c.code == 405 && resp.header.Get("Allow") != "GET" {
			t.Errorf("%s: Allow %q", c.name, resp.header.Get("Allow"))
		}
		if c.code == 200 {
			ra.next(t)
		}
	}
	if out := e.natsCall(t, a.id, subjects.OpGetCapacity, map[string]string{"client_id": b.id}, nil); out["code"] != 403.0 {
		t.Errorf("NATS get_capacity naming another tenant: %v", out)
	}
	if out := e.natsCall(t, a.id, subjects.OpGetCapacity, `{"ticket_type":"GOLD"}`, nil); out["code"] != 400.0 || out["error"] != codeUnknownField {
		t.Errorf("NATS get_capacity with an unknown member: %v", out)
	}
	ra.none(t)
	rb.none(t)

	// A reply outside the contract is ours to fix (500), a responder
	// that cannot answer is 503, one that does not answer too.
	ra.answers(subjects.ETACapacity, &subjects.ETAReply{Code: subjects.ETAOK, Capacity: []subjects.TypeCapacity{{Type: subjects.Gold}}})
	if resp := e.do(t, request{method: "GET", path: "/capacity", token: a.token}); resp.status != 500 || resp.body["error"] != codeInternal {
		t.Errorf("a capacity reply without SILVER and BRONZE: %d %s", resp.status, resp.raw)
	}
	ra.answers(subjects.ETACapacity, refusal(subjects.ETACodeUnavailable))
	if resp := e.do(t, request{method: "GET", path: "/capacity", token: a.token}); resp.status != 503 || resp.header.Get("Retry-After") == "" {
		t.Errorf("a responder answering unavailable: %d %s", resp.status, resp.raw)
	}
	ra.answers(subjects.ETACapacity, nil)
	if resp := e.do(t, request{method: "GET", path: "/capacity", token: a.token}); resp.status != 503 || resp.body["error"] != codeUnavailable {
		t.Errorf("no reply: %d %s", resp.status, resp.raw)
	}
}

func TestRefusedCreateSaysWhatFits(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: feasibleETATimeout})
	a := e.openAccount(t, "Fits", "fits@example.com")
	r := newScriptedResponder(t, e, a.id)
	noSlot := func(fits ...string) *subjects.ETAReply {
		reply := subjects.ETARefusal(subjects.ETACodeNoSlot, "", "full")
		reply.Fits = fits
		return &reply
	}
	msg := "ticket_type: no agent-minute is free within the GOLD SLA window (2h0m0s)"

	r.answers(subjects.ETAReserve, noSlot(subjects.Bronze, subjects.Silver))
	resp := e.create(t, a, subjects.Gold, nil)
	if resp.status != http.StatusConflict {
		t.Fatalf("create_ticket: %d %s", resp.status, resp.raw)
	}
	wantJSON(t, "a refused GOLD", resp.body, map[string]any{"status": "rejected", "error": "sla_unavailable", "message": msg,
		"fits": []string{"SILVER", "BRONZE"}})
	r.next(t)
	// With an Idempotency-Key, and over NATS: the same answer.
	resp = e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"fits-1"}})
	wantJSON(t, "a refused GOLD with an Idempotency-Key", resp.body, map[string]any{"status": "rejected", "error": "sla_unavailable",
		"message": msg, "fits": []string{"SILVER", "BRONZE"}})
	r.next(t)
	out := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}, nil)
	wantJSON(t, "NATS create_ticket refused", out, map[string]any{"status": "rejected", "error": "sla_unavailable",
		"message": msg, "fits": []string{"SILVER", "BRONZE"}, "code": 409})
	r.next(t)

	// Nothing fits: an empty list, not a missing member (the responders
	// leave an empty Fits out of their reply).
	r.answers(subjects.ETAReserve, noSlot())
	resp = e.create(t, a, subjects.Gold, nil)
	wantJSON(t, "a refused GOLD when nothing fits", resp.body, map[string]any{"status": "rejected", "error": "sla_unavailable",
		"message": msg, "fits": []string{}})
	r.next(t)

	// validate_eta's 409 is unchanged.
	r.answers(subjects.ETAHold, noSlot(subjects.Bronze))
	got := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})
	wantJSON(t, "a refused validate_eta", got.body, map[string]any{"status": "unavailable", "error": "sla_unavailable", "message": msg})
	r.next(t)
	r.none(t)
}

func TestPatchUnavailableReplans(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: feasibleETATimeout})
	a, agent := e.tenantWithAgent(t, "Replan", "replan@example.com")
	r := newScriptedResponder(t, e, a.id)
	slot := e.clock.Now().Truncate(time.Minute).Add(time.Minute)
	r.answers(subjects.ETAReplan, &subjects.ETAReply{Code: subjects.ETAOK, Moved: 41, AtRisk: []subjects.AtRiskTicket{
		{Ticket: "t1", Type: subjects.Gold, Agent: agent, SlotTime: slot, Deadline: slot.Add(time.Hour)},
		{Ticket: "t2", Type: subjects.Gold, Agent: agent, SlotTime: slot.Add(time.Minute), Deadline: slot.Add(time.Hour)},
	}})
	patch := func(status string) map[string]any {
		t.Helper()
		return e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + agent, token: a.token,
			body: jsonBody(map[string]string{"agent_status": status})})
	}

	off := patch(subjects.AgentUnavailable)
	req := r.next(t)
	if req.Op != subjects.ETAReplan || req.Tenant != a.id || req.AgentsRev == 0 || req.AgentsRev != e.agents.Revision(a.id) {
		t.Errorf("PATCH unavailable asked %+v, want replan with agents_rev %d", req, e.agents.Revision(a.id))
	}
	if off["agent_id"] != agent || off["agent_status"] != "unavailable" || off["updated_at"] == nil {
		t.Errorf("PATCH unavailable answered %v", off)
	}
	if !reflect.DeepEqual(off["replan"], map[string]any{"moved": 41.0, "at_risk": 2.0}) {
		t.Errorf("PATCH unavailable: replan %v, want moved 41, at_risk 2", off["replan"])
	}

	// Available again: no re-plan asked, no replan member.
	on := patch(subjects.AgentAvailable)
	if _, ok := on["replan"]; ok || on["agent_status"] != "available" {
		t.Errorf("PATCH available answered %v", on)
	}
	r.none(t)

	// A re-plan that gets no answer: the PATCH still succeeds (the agent
	// change is saved) and says how to retry.
	r.answers(subjects.ETAReplan, nil)
	off = patch(subjects.AgentUnavailable)
	r.next(t)
	wantJSON(t, "the replan member of a PATCH whose re-plan got no reply", map[string]any{"replan": off["replan"]},
		map[string]any{"replan": map[string]any{"error": codeUnavailable, "retry": "PATCH /agents/" + agent,
			"message": "the agent change is saved, but its re-plan could not be confirmed (" + msgUnavailable +
				"); repeat the PATCH to re-plan, GET /tickets/at-risk lists the tickets no agent can take"}})
	if off["agent_status"] != "unavailable" {
		t.Errorf("PATCH answered %v", off)
	}
	list := e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: a.token})
	if ags, _ := list["agents"].([]any); len(ags) != 1 || ags[0].(map[string]any)["agent_status"] != "unavailable" {
		t.Errorf("after a PATCH whose re-plan failed, GET /agents = %v", list)
	}
	// A responder that refuses the request (today's, which knows no
	// replan: 400 invalid_field "op") is the same: the PATCH stands.
	r.answers(subjects.ETAReplan, refusal(subjects.ETACodeInvalidField))
	off = patch(subjects.AgentUnavailable)
	r.next(t)
	if rp, _ := off["replan"].(map[string]any); rp["error"] != codeInternal || rp["retry"] != "PATCH /agents/"+agent {
		t.Errorf("PATCH whose re-plan was refused: %v", off)
	}
	// Repeating the PATCH is the retry: it asks again.
	r.answers(subjects.ETAReplan, &subjects.ETAReply{Code: subjects.ETAOK})
	off = patch(subjects.AgentUnavailable)
	r.next(t)
	if !reflect.DeepEqual(off["replan"], map[string]any{"moved": 0.0, "at_risk": 0.0}) {
		t.Errorf("the repeated PATCH: replan %v", off["replan"])
	}
	// A bad PATCH asks nothing.
	for _, body := range []string{`{"agent_status":"away"}`, `{"agent_status":"unavailable","extra":1}`} {
		if resp := e.do(t, request{method: "PATCH", path: "/agents/" + agent, token: a.token, body: body}); resp.status != 400 {
			t.Errorf("PATCH %s: %d %s", body, resp.status, resp.raw)
		}
	}
	if resp := e.do(t, request{method: "PATCH", path: "/agents/anobody", token: a.token, body: `{"agent_status":"unavailable"}`}); resp.status != 404 {
		t.Errorf("PATCH of an unknown agent: %d %s", resp.status, resp.raw)
	}
	r.none(t)
}

func TestAtRiskList(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: feasibleETATimeout})
	a, agent := e.tenantWithAgent(t, "At risk", "at-risk@example.com")
	b := e.openAccount(t, "Other", "other-at-risk@example.com")
	r := newScriptedResponder(t, e, a.id)
	rb := newScriptedResponder(t, e, b.id)
	slot := e.clock.Now().Truncate(time.Minute).Add(2 * time.Minute)
	created := subjects.Stamp(e.clock.Now())
	r.answers(subjects.ETAAtRisk, &subjects.ETAReply{Code: subjects.ETAOK, AtRisk: []subjects.AtRiskTicket{
		{Ticket: "tone", Type: subjects.Gold, Agent: agent, SlotTime: slot, Deadline: created.Add(2 * time.Hour)},
		{Ticket: "ttwo", Type: subjects.Bronze, Agent: agent, SlotTime: slot.Add(time.Minute), Deadline: created.Add(8 * time.Hour)},
	}})
	rb.answers(subjects.ETAAtRisk, &subjects.ETAReply{Code: subjects.ETAOK})
	want := map[string]any{"tickets": []any{
		map[string]any{"ticket_id": "tone", "ticket_type": "GOLD", "agent_id": agent, "slot_time": timestamp(slot),
			"deadline": timestamp(created.Add(2 * time.Hour))},
		map[string]any{"ticket_id": "ttwo", "ticket_type": "BRONZE", "agent_id": agent, "slot_time": timestamp(slot.Add(time.Minute)),
			"deadline": timestamp(created.Add(8 * time.Hour))},
	}}

	got := e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/at-risk", token: a.token})
	wantJSON(t, "GET /tickets/at-risk", got, want)
	if req := r.next(t); req.Op != subjects.ETAAtRisk || req.Tenant != a.id {
		t.Errorf("GET /tickets/at-risk asked %+v", req)
	}
	out := e.natsCall(t, a.id, subjects.OpGetAtRisk, `{}`, nil)
	want["code"] = 200
	wantJSON(t, "NATS get_at_risk", out, want)
	r.next(t)
	// None at risk: an empty list. Another tenant sees its own.
	wantJSON(t, "tenant B's GET /tickets/at-risk", e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/at-risk", token: b.token}),
		map[string]any{"tickets": []any{}})
	rb.next(t)

	// Routing: "at-risk" is never a ticket id, and a ticket id is never
	// the list.
	if resp := e.getTicket(t, a, "t"+"zzzzzzzzzzzzzzzzzzzz"); resp.status != 404 || resp.body["error"] != codeTicketNotFound {
		t.Errorf("GET of an unknown ticket: %d %s", resp.status, resp.raw)
	}
	for _, c := range []struct {
		name string
		req  request
		code int
		err  string
	}{
		{"no token", request{method: "GET", path: "/tickets/at-risk"}, 401, codeUnauthorized},
		{"a query parameter", request{method: "GET", path: "/tickets/at-risk?agent_id=" + agent, token: a.token}, 400, codeUnknownField},
		{"POST", request{method: "POST", path: "/tickets/at-risk", token: a.token, body: `{}`}, 405, codeMethodNotAllowed},
		{"DELETE", request{method: "DELETE", path: "/tickets/at-risk", token: a.token}, 405, codeMethodNotAllowed},
		{"a subpath", request{method: "GET", path: "/tickets/at-risk/tone", token: a.token}, 404, codeNotFound},
		{"another case", request{method: "GET", path: "/tickets/AT-RISK", token: a.token}, 404, codeTicketNotFound},
	} {
		resp := e.do(t, c.req)
		if resp.status != c.code || resp.body["error"] != c.err {
			t.Errorf("%s: %d %s, want %d %s", c.name, resp.status, resp.raw, c.code, c.err)
		}
		if c.code == 405 && resp.header.Get("Allow") != "GET" {
			t.Errorf("%s: Allow %q", c.name, resp.header.Get("Allow"))
		}
	}
	r.none(t)
	rb.none(t)

	// A list outside the contract is ours to fix.
	r.answers(subjects.ETAAtRisk, &subjects.ETAReply{Code: subjects.ETAOK, AtRisk: []subjects.AtRiskTicket{{Ticket: "tone"}}})
	if resp := e.do(t, request{method: "GET", path: "/tickets/at-risk", token: a.token}); resp.status != 500 {
		t.Errorf("a broken at-risk list: %d %s", resp.status, resp.raw)
	}
}

// TestIdempotentReplayNamesTheCurrentPlan: a replayed 201 reads its
// ticket back (it may have moved since; feasible_e2e_test.go moves one)
// and answers it as the first 201 did while it has not moved; a ticket
// cancelled since is replayed as it was remembered, creating nothing.
func TestIdempotentReplayNamesTheCurrentPlan(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Replay", "replay@example.com")
	e.createWhenReady(t, a, subjects.Silver)
	key := http.Header{"Idempotency-Key": {"replay-1"}}
	first := e.create(t, a, subjects.Gold, key)
	if first.status != http.StatusCreated {
		t.Fatalf("create_ticket: %d %s", first.status, first.raw)
	}
	id := first.body["ticket_id"].(string)
	again := e.create(t, a, subjects.Gold, key)
	if again.status != http.StatusCreated || !reflect.DeepEqual(again.body, first.body) {
		t.Errorf("replay: %d %s, want %s", again.status, again.raw, first.raw)
	}
	base := e.slotRecords(t, a.id)
	if c := e.cancel(t, a, id); c.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", c.status, c.raw)
	}
	after := e.create(t, a, subjects.Gold, key)
	if after.status != http.StatusCreated || !reflect.DeepEqual(after.body, first.body) {
		t.Errorf("replay after the cancel: %d %s, want %s", after.status, after.raw, first.raw)
	}
	if n := e.slotRecords(t, a.id); n != base+1 {
		t.Errorf("%d slot records since the cancel, want only its own", n-base)
	}
}
