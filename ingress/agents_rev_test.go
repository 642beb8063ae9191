package ingress

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/subjects"
)

// recordingResponder answers every ETA request of one tenant 409 and
// hands the request to the test.
func recordingResponder(t *testing.T, e *ticketEnv, tenant string) <-chan subjects.ETARequest {
	t.Helper()
	got := make(chan subjects.ETARequest, 16)
	nc := e.nats.Connect(t)
	sub, err := nc.Subscribe(subjects.ETA(tenant), func(m *nats.Msg) {
		var req subjects.ETARequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("ETA request %q: %v", m.Data, err)
		}
		got <- req
		data, _ := json.Marshal(subjects.ETARefusal(subjects.ETACodeNoSlot, "", "none"))
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return got
}

func nextRequest(t *testing.T, got <-chan subjects.ETARequest) subjects.ETARequest {
	t.Helper()
	select {
	case req := <-got:
		return req
	case <-time.After(30 * time.Second):
		t.Fatal("no ETA request arrived")
		return subjects.ETARequest{}
	}
}

// TestETARequestsCarryTheAgentsRevision: every admission that reads the
// tenant's agents (create_ticket over HTTP and over the NATS API, with and
// without an Idempotency-Key, validate_eta, and the re-plan of a PATCH
// that makes an agent unavailable) asks the responders with
// the revision of the tenant's last agent write, so that they answer only
// from a calendar that has it.
func TestETARequestsCarryTheAgentsRevision(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true})
	a := e.openAccount(t, "Revisions", "revisions@example.com")
	got := recordingResponder(t, e, a.id)
	agent := e.addAgent(t, a)
	created := e.agents.Revision(a.id)
	if created == 0 {
		t.Fatal("no agents revision after POST /agents")
	}

	check := func(what, op string, want uint64) {
		t.Helper()
		req := nextRequest(t, got)
		if req.Op != op || req.AgentsRev != want {
			t.Errorf("%s: %s with agents_rev %d, want %s with %d", what, req.Op, req.AgentsRev, op, want)
		}
	}
	if r := e.create(t, a, subjects.Gold, nil); r.status != http.StatusConflict {
		t.Fatalf("create_ticket: %d %s", r.status, r.raw)
	}
	check("HTTP create_ticket", subjects.ETAReserve, created)
	if r := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"key-1"}}); r.status != http.StatusConflict {
		t.Fatalf("create_ticket with an Idempotency-Key: %d %s", r.status, r.raw)
	}
	check("HTTP create_ticket with an Idempotency-Key", subjects.ETAReserve, created)
	if r := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver}); r.status != http.StatusConflict {
		t.Fatalf("validate_eta: %d %s", r.status, r.raw)
	}
	check("validate_eta", subjects.ETAHold, created)

	e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + agent, token: a.token,
		body: jsonBody(map[string]string{"agent_status": subjects.AgentUnavailable})})
	changed := e.agents.Revision(a.id)
	if changed <= created {
		t.Fatalf("agents revision %d after PATCH, not above %d", changed, created)
	}
	// Making the agent unavailable re-plans its tickets, from a calendar
	// that has that very write.
	check("PATCH unavailable", subjects.ETAReplan, changed)
	if out := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze}, nil); out["code"] != float64(http.StatusConflict) {
		t.Fatalf("NATS create_ticket: %v", out)
	}
	check("NATS create_ticket", subjects.ETAReserve, changed)
	if out := e.natsCall(t, a.id, subjects.OpValidateETA, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze}, nil); out["code"] != float64(http.StatusConflict) {
		t.Fatalf("NATS validate_eta: %v", out)
	}
	check("NATS validate_eta", subjects.ETAHold, changed)
}
