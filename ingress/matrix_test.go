package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// TestTenantMatrix is I6 over every endpoint and every NATS API subject:
// tenant B, with its own valid token (or on its own subject), names each
// of tenant A's ids. Naming A's client_id is 403; A's ticket, agent or
// hold is the very answer a nonexistent one gets (nothing reveals that it
// exists); no answer carries anything of A; nothing of A changes. The
// tickets are checked twice: while A's are only in its slot records, and
// once a worker has written them into A's database.
func TestTenantMatrix(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{holdTTL: time.Hour})
	const aName, aEmail = "Matrix Alpha Industries", "secret-ops@matrix-alpha.example"
	a, aAgent := e.tenantWithAgent(t, aName, aEmail)
	b, bAgent := e.tenantWithAgent(t, "Matrix Beta", "ops@matrix-beta.example")
	e.createWhenReady(t, b, subjects.Gold)
	aTicket := e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)
	aCancelled := e.create(t, a, subjects.Silver, nil).body["ticket_id"].(string)
	const sharedKey = "order-1001"
	aKeyed := e.create(t, a, subjects.Bronze, http.Header{idempotencyHeader: {sharedKey}}).body["ticket_id"].(string)
	e.must(t, http.StatusOK, request{method: "POST", path: "/cancel_ticket", token: a.token,
		body: jsonBody(map[string]string{"ticket_id": aCancelled})})
	hold := doOn(t, e.internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze})})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	aHold := hold.body["slot_id"].(string)
	// The same agent-minute with another nonce: a hold nobody has.
	noHold := aHold[:len(aHold)-subjects.HoldNonceLen] + "aaaaaaaaaaaa"
	// A ticket id of A's very slot with another nonce: one that names
	// where A's ticket is, and exists nowhere.
	noTicket := aTicket[:len(aTicket)-subjects.TicketNonceLen] + "aaaaaaaaaaaaaaaa"
	const noAgent = "anosuchagentatall2345"

	// Everything of A that must never show in B's answers.
	secrets := []string{a.id, aName, aEmail, a.subDomain, aAgent, aTicket, aCancelled, aKeyed, aHold,
		aHold[len(aHold)-subjects.HoldNonceLen:]}
	scan := func(t *testing.T, what string, raw []byte) {
		t.Helper()
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("%s: the answer to B carries A's %q: %s", what, s, raw)
			}
		}
	}

	aBefore := e.tenantState(t, a, aTicket, aCancelled, aKeyed)

	// One row per request B can make naming A: its answer, and the answer
	// to the same request naming nothing (same bytes) when given.
	type probe struct {
		name    string
		http    *request // over B's token
		subject string   // or a NATS API request
		body    any
		status  int
		code    string
		twin    any // the same request naming nothing that exists: a *request or a NATS body
	}
	bReq := func(method, path string, body any) *request {
		r := &request{method: method, path: path, token: b.token}
		if body != nil {
			r.body = jsonBody(body)
		}
		return r
	}
	api := func(op string) string { return subjects.API(b.id, op) }
	probes := func() []probe {
		ps := []probe{
			// HTTP, B's token, A's client_id: 403.
			{name: "logout naming A", http: bReq("POST", "/logout", map[string]string{"client_id": a.id}), status: 403, code: codeForbidden},
			{name: "create agent for A", http: bReq("POST", "/agents", map[string]string{"client_id": a.id, "name": "mole"}), status: 403, code: codeForbidden},
			{name: "patch own agent naming A", http: bReq("PATCH", "/agents/"+bAgent, map[string]string{"agent_status": "unavailable", "client_id": a.id}), status: 403, code: codeForbidden},
			{name: "patch A's agent naming A", http: bReq("PATCH", "/agents/"+aAgent, map[string]string{"agent_status": "unavailable", "client_id": a.id}), status: 403, code: codeForbidden,
				twin: bReq("PATCH", "/agents/"+noAgent, map[string]string{"agent_status": "unavailable", "client_id": a.id})},
			{name: "create ticket for A", http: bReq("POST", "/create_ticket", map[string]string{"client_id": a.id, "ticket_type": "GOLD"}), status: 403, code: codeForbidden},
			// HTTP, B's token, A's ticket or agent: 404 as for nothing.
			{name: "patch A's agent", http: bReq("PATCH", "/agents/"+aAgent, map[string]string{"agent_status": "unavailable"}), status: 404, code: codeAgentNotFound,
				twin: bReq("PATCH", "/agents/"+noAgent, map[string]string{"agent_status": "unavailable"})},
			{name: "patch A's agent naming B", http: bReq("PATCH", "/agents/"+aAgent, map[string]string{"agent_status": "available", "client_id": b.id}), status: 404, code: codeAgentNotFound,
				twin: bReq("PATCH", "/agents/"+noAgent, map[string]string{"agent_status": "available", "client_id": b.id})},
			{name: "login with A's id", http: &request{method: "POST", path: "/login", body: jsonBody(map[string]string{"client_id": a.id, "password": "Beta's password!"})},
				status: 401, code: codeInvalidCredentials,
				twin: &request{method: "POST", path: "/login", body: jsonBody(map[string]string{"client_id": "cnosuchclient", "password": "Beta's password!"})}},
			// Internal listener: B's client_id with A's hold.
			{name: "internal allocate A's hold as B", http: &request{method: "POST", path: "/allocate_slot",
				body: jsonBody(map[string]string{"client_id": b.id, "ticket_type": "BRONZE", "slot_id": aHold})}, status: 410, code: codeHoldExpired,
				twin: &request{method: "POST", path: "/allocate_slot",
					body: jsonBody(map[string]string{"client_id": b.id, "ticket_type": "BRONZE", "slot_id": noHold})}},
			// NATS, B's subject, A's client_id: 403.
			{name: "nats create for A", subject: api(subjects.OpCreateTicket), body: map[string]string{"client_id": a.id, "ticket_type": "GOLD"}, status: 403, code: codeForbidden},
			{name: "nats validate for A", subject: api(subjects.OpValidateETA), body: map[string]string{"client_id": a.id, "ticket_type": "GOLD"}, status: 403, code: codeForbidden},
			{name: "nats allocate for A", subject: api(subjects.OpAllocateSlot), body: map[string]string{"client_id": a.id, "ticket_type": "BRONZE", "slot_id": aHold}, status: 403, code: codeForbidden},
			// NATS, B's subject, A's hold: 410 as for nothing.
			{name: "nats allocate A's hold as B", subject: api(subjects.OpAllocateSlot), body: map[string]string{"client_id": b.id, "ticket_type": "BRONZE", "slot_id": aHold},
				status: 410, code: codeHoldExpired, twin: map[string]string{"client_id": b.id, "ticket_type": "BRONZE", "slot_id": noHold}},
			// NATS, A's subject, B's client_id: refused.
			{name: "nats A's subject, create for B", subject: subjects.API(a.id, subjects.OpCreateTicket), body: map[string]string{"client_id": b.id, "ticket_type": "GOLD"}, status: 403, code: codeForbidden},
			{name: "nats A's subject, validate for B", subject: subjects.API(a.id, subjects.OpValidateETA), body: map[string]string{"client_id": b.id, "ticket_type": "GOLD"}, status: 403, code: codeForbidden},
			{name: "nats A's subject, allocate for B", subject: subjects.API(a.id, subjects.OpAllocateSlot), body: map[string]string{"client_id": b.id, "ticket_type": "BRONZE", "slot_id": aHold}, status: 403, code: codeForbidden},
		}
		for label, id := range map[string]string{"live": aTicket, "cancelled": aCancelled} {
			ps = append(ps,
				probe{name: "get A's ticket " + label, http: bReq("GET", "/tickets/"+id, nil), status: 404, code: codeTicketNotFound,
					twin: bReq("GET", "/tickets/"+noTicket, nil)},
				probe{name: "cancel A's ticket " + label, http: bReq("POST", "/cancel_ticket", map[string]string{"ticket_id": id}), status: 404, code: codeTicketNotFound,
					twin: bReq("POST", "/cancel_ticket", map[string]string{"ticket_id": noTicket})},
				probe{name: "nats get A's ticket " + label, subject: api(subjects.OpGetTicket), body: map[string]string{"ticket_id": id}, status: 404, code: codeTicketNotFound,
					twin: map[string]string{"ticket_id": noTicket}},
				probe{name: "nats cancel A's ticket " + label, subject: api(subjects.OpCancelTicket), body: map[string]string{"ticket_id": id}, status: 404, code: codeTicketNotFound,
					twin: map[string]string{"ticket_id": noTicket}},
			)
		}
		return ps
	}

	run := func(t *testing.T) {
		for _, p := range probes() {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				var status int
				var raw, twinRaw []byte
				if p.http != nil {
					h := e.handler
					if p.http.path == "/allocate_slot" {
						h = e.internal
					}
					resp := doOn(t, h, *p.http)
					status, raw = resp.status, resp.raw
					if p.twin != nil {
						twinRaw = doOn(t, h, *p.twin.(*request)).raw
					}
				} else {
					status, raw = e.natsRaw(t, p.subject, p.body, nil)
					if p.twin != nil {
						_, twinRaw = e.natsRaw(t, p.subject, p.twin, nil)
					}
				}
				var body map[string]any
				if err := json.Unmarshal(raw, &body); err != nil {
					t.Fatalf("answer %q: %v", raw, err)
				}
				if status != p.status || body["error"] != p.code {
					t.Fatalf("%d %s, want %d %s", status, raw, p.status, p.code)
				}
				scan(t, p.name, raw)
				if p.twin != nil && !bytes.Equal(raw, twinRaw) {
					t.Errorf("A's id is told apart from a nonexistent one:\n%s\n%s", raw, twinRaw)
				}
			})
		}
		// A's Idempotency-Key is B's own: B gets a ticket of its own (or a
		// rejection), never A's.
		keyed := e.do(t, request{method: "POST", path: "/create_ticket", token: b.token,
			header: http.Header{idempotencyHeader: {sharedKey}},
			body:   jsonBody(map[string]string{"client_id": b.id, "ticket_type": subjects.Bronze})})
		if keyed.status != http.StatusCreated && keyed.status != http.StatusConflict {
			t.Errorf("B's create with A's Idempotency-Key: %d %s", keyed.status, keyed.raw)
		}
		scan(t, "create with A's Idempotency-Key", keyed.raw)
		code, raw := e.natsRaw(t, api(subjects.OpCreateTicket), map[string]string{"client_id": b.id, "ticket_type": subjects.Bronze},
			nats.Header{idempotencyHeader: {sharedKey}})
		if code != http.StatusCreated && code != http.StatusConflict {
			t.Errorf("B's NATS create with A's Idempotency-Key: %d %s", code, raw)
		}
		scan(t, "NATS create with A's Idempotency-Key", raw)
		// B's own listings show nothing of A.
		resp := e.do(t, request{method: "GET", path: "/agents", token: b.token})
		if resp.status != http.StatusOK {
			t.Fatalf("B lists its agents: %d %s", resp.status, resp.raw)
		}
		scan(t, "GET /agents", resp.raw)
	}

	t.Run("tickets in the slot records", run)
	if after := e.tenantState(t, a, aTicket, aCancelled, aKeyed); !reflect.DeepEqual(after, aBefore) {
		t.Errorf("A changed under B's requests:\nbefore %+v\nafter  %+v", aBefore, after)
	}

	// A worker writes A's tickets into A's database; B still finds none.
	e.startAllocator(t)
	waitRows(t, e, a.id, map[string]string{aTicket: subjects.StatusAllocated, aCancelled: subjects.StatusCancelled,
		aKeyed: subjects.StatusAllocated})
	aBefore = e.tenantState(t, a, aTicket, aCancelled, aKeyed)
	t.Run("tickets in the database", run)
	if after := e.tenantState(t, a, aTicket, aCancelled, aKeyed); !reflect.DeepEqual(after, aBefore) {
		t.Errorf("A changed under B's requests:\nbefore %+v\nafter  %+v", aBefore, after)
	}
	// A's hold survived every attempt of B's: A can still allocate it.
	alloc := doOn(t, e.internal, request{method: "POST", path: "/allocate_slot",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze, "slot_id": aHold})})
	if alloc.status != http.StatusCreated {
		t.Errorf("A allocates its hold after B's attempts: %d %s", alloc.status, alloc.raw)
	}
}

// tenantState is what B's requests could change of a tenant: its agents,
// its slot keys, its slot records and how its tickets read.
type tenantState struct {
	agents  []tenants.Agent
	slots   []string
	records uint64
	tickets map[string]string // id -> GET /tickets/{id} as the owner sees it
}

func (e *ticketEnv) tenantState(t *testing.T, acc account, tickets ...string) tenantState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ten, err := e.registry.Get(ctx, acc.id)
	if err != nil {
		t.Fatal(err)
	}
	s := tenantState{slots: e.slotKeys(t, acc.id), records: e.slotRecords(t, acc.id), tickets: map[string]string{}}
	slices.Sort(s.slots)
	if s.agents, err = e.agents.List(ctx, ten); err != nil {
		t.Fatal(err)
	}
	for _, id := range tickets {
		s.tickets[id] = string(e.getTicket(t, acc, id).raw)
	}
	return s
}

// waitRows waits until the tenant's database holds each ticket with its
// status.
func waitRows(t *testing.T, e *ticketEnv, tenant string, want map[string]string) {
	t.Helper()
	for id, status := range want {
		testkit.Eventually(t, 20*time.Second, func() bool {
			r, err := e.row(t, tenant, id)
			if err != nil && !errors.Is(err, tenants.ErrTicketNotFound) {
				t.Fatalf("reading ticket %s: %v", id, err)
			}
			return err == nil && r.Status == status
		}, "ticket "+id+" "+status+" in the database")
	}
}

// natsRaw sends one request to the NATS API and returns its code and raw
// reply. A string body is sent as it is, anything else as JSON.
func (e *ticketEnv) natsRaw(t *testing.T, subject string, body any, header nats.Header) (int, []byte) {
	t.Helper()
	data, ok := body.(string)
	if !ok {
		data = jsonBody(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := e.client.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: []byte(data), Header: header})
	if err != nil {
		t.Fatalf("NATS %s: %v", subject, err)
	}
	var out struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		t.Fatalf("NATS %s: reply %q: %v", subject, reply.Data, err)
	}
	return out.Code, reply.Data
}
