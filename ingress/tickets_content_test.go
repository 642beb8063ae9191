package ingress

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
)

// hostileDescription is a description of exactly
// subjects.MaxDescriptionBytes bytes that encoding/json escapes six
// times over ("<>&" as \u003c...): the largest body a client's encoder
// makes of a valid description.
func hostileDescription() string {
	return strings.Repeat("<>&", subjects.MaxDescriptionBytes/3) + "<"
}

// createWith is POST /create_ticket with extra members.
func (e *ticketEnv) createWith(t testing.TB, a account, typ string, extra map[string]any, header http.Header) response {
	t.Helper()
	body := map[string]any{"client_id": a.id, "ticket_type": typ}
	for k, v := range extra {
		body[k] = v
	}
	return e.do(t, request{method: "POST", path: "/create_ticket", token: a.token, header: header, body: jsonBody(body)})
}

// listedTicket is ticket id as GET /tickets lists it for a (nil if not).
func (e *ticketEnv) listedTicket(t *testing.T, a account, id string) map[string]any {
	t.Helper()
	p := e.listPage(t, a, "?limit=200")
	for _, tk := range p.tickets {
		if tk["ticket_id"] == id {
			return tk
		}
	}
	return nil
}

// natsListed is ticket id as list_tickets lists it over NATS (nil if not).
func (e *ticketEnv) natsListed(t *testing.T, a account, id string) map[string]any {
	t.Helper()
	reply := e.natsCall(t, a.id, subjects.OpListTickets, map[string]any{"limit": 200}, nil)
	if reply["code"] != float64(http.StatusOK) {
		t.Fatalf("list_tickets over NATS: %v", reply)
	}
	for _, x := range reply["tickets"].([]any) {
		if tk := x.(map[string]any); tk["ticket_id"] == id {
			return tk
		}
	}
	return nil
}

// checkContent checks the content members of a rendered ticket: want ""
// is no member at all.
func checkContent(t *testing.T, how string, tk map[string]any, subject, description string) {
	t.Helper()
	if tk == nil {
		t.Errorf("%s: ticket missing", how)
		return
	}
	for member, want := range map[string]string{"subject": subject, "description": description} {
		got, present := tk[member]
		switch {
		case want == "" && present:
			t.Errorf("%s: %s = %q, want no member", how, member, got)
		case want != "" && got != want:
			g, _ := got.(string)
			t.Errorf("%s: %s of %d bytes (%.20q), want %d bytes (%.20q)", how, member, len(g), g, len(want), want)
		}
	}
}

// TestTicketContent: subject and description given on create_ticket
// (HTTP and NATS) and allocate_slot (internal HTTP and NATS) are returned
// by GET /tickets/{id}, get_ticket, GET /tickets and list_tickets, read
// from the slot record before an allocator has written the ticket and
// from its row after; the create answer keeps its shape; "" and null are
// no content; a cancel keeps the content; another tenant sees nothing of
// it.
func TestTicketContent(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Content Co", "ops@content.example")
	b, _ := e.tenantWithAgent(t, "Other Co", "ops@other-content.example")
	plain := e.createWhenReady(t, a, subjects.Gold)
	e.createWhenReady(t, b, subjects.Gold)

	type ticket struct {
		id, subject, description string
	}
	var tickets []ticket
	// HTTP, a maximal subject and a maximal hostile description.
	subject := strings.Repeat("ü", subjects.MaxSubjectRunes-1) + "&"
	desc := hostileDescription()
	if n := len(jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD", "subject": subject,
		"description": desc})); n <= 6*subjects.MaxDescriptionBytes || n > maxBodyBytes {
		t.Fatalf("the maximal body is %d bytes; want it escaped and within %d", n, maxBodyBytes)
	}
	resp := e.createWith(t, a, subjects.Gold, map[string]any{"subject": subject, "description": desc}, nil)
	if resp.status != http.StatusCreated {
		t.Fatalf("create with maximal content: %d %.300s", resp.status, resp.raw)
	}
	checkAccepted(t, resp.body, subjects.Gold, agent) // the answer of a create without content: seven members
	tickets = append(tickets, ticket{resp.body["ticket_id"].(string), subject, desc})
	// NATS.
	nresp := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]any{"client_id": a.id, "ticket_type": "SILVER",
		"subject": "Über NATS", "description": "line 1\nline 2\r\n\ttabbed"}, nil)
	if nresp["code"] != float64(http.StatusCreated) {
		t.Fatalf("create with content over NATS: %v", nresp)
	}
	delete(nresp, "code")
	checkAccepted(t, nresp, subjects.Silver, agent)
	tickets = append(tickets, ticket{nresp["ticket_id"].(string), "Über NATS", "line 1\nline 2\r\n\ttabbed"})
	// "" and null are none.
	resp = e.createWith(t, a, subjects.Bronze, map[string]any{"subject": "", "description": nil}, nil)
	if resp.status != http.StatusCreated {
		t.Fatalf("create with empty content: %d %s", resp.status, resp.raw)
	}
	tickets = append(tickets, ticket{id: resp.body["ticket_id"].(string)})
	// allocate_slot, internal HTTP and NATS.
	hold := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": "BRONZE"})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	alloc := e.internalDo(t, "/allocate_slot", map[string]any{"client_id": a.id, "ticket_type": "BRONZE",
		"slot_id": hold.body["slot_id"], "subject": "Two-phase", "description": "held, then allocated"})
	if alloc.status != http.StatusCreated || len(alloc.body) != 2 {
		t.Fatalf("allocate_slot with content: %d %s", alloc.status, alloc.raw)
	}
	tickets = append(tickets, ticket{alloc.body["ticket_id"].(string), "Two-phase", "held, then allocated"})
	nhold := e.natsCall(t, a.id, subjects.OpValidateETA, map[string]string{"client_id": a.id, "ticket_type": "BRONZE"}, nil)
	nalloc := e.natsCall(t, a.id, subjects.OpAllocateSlot, map[string]any{"client_id": a.id, "ticket_type": "BRONZE",
		"slot_id": nhold["slot_id"], "subject": "Two-phase NATS"}, nil)
	if nalloc["code"] != float64(http.StatusCreated) {
		t.Fatalf("allocate_slot with content over NATS: %v", nalloc)
	}
	tickets = append(tickets, ticket{id: nalloc["ticket_id"].(string), subject: "Two-phase NATS"})
	tickets = append(tickets, ticket{id: plain["ticket_id"].(string)})

	check := func(when string) {
		t.Helper()
		for _, tk := range tickets {
			got := e.getTicket(t, a, tk.id)
			if got.status != http.StatusOK {
				t.Fatalf("%s: GET %s: %d %s", when, tk.id, got.status, got.raw)
			}
			checkContent(t, when+": GET", got.body, tk.subject, tk.description)
			overNATS := e.natsCall(t, a.id, subjects.OpGetTicket, map[string]string{"ticket_id": tk.id}, nil)
			delete(overNATS, "code")
			if !reflect.DeepEqual(overNATS, got.body) {
				t.Errorf("%s: get_ticket %s over NATS differs from GET", when, tk.id)
			}
			checkContent(t, when+": GET /tickets", e.listedTicket(t, a, tk.id), tk.subject, tk.description)
			checkContent(t, when+": list_tickets", e.natsListed(t, a, tk.id), tk.subject, tk.description)
			// Tenant isolation: b cannot read a's ticket, nor list it.
			if other := e.getTicket(t, b, tk.id); other.status != http.StatusNotFound || strings.Contains(string(other.raw), "subject") {
				t.Errorf("%s: b's GET of a's ticket: %d %s", when, other.status, other.raw)
			}
			if e.listedTicket(t, b, tk.id) != nil || e.natsListed(t, b, tk.id) != nil {
				t.Errorf("%s: b lists a's ticket %s", when, tk.id)
			}
		}
	}
	for _, tk := range tickets {
		if got := e.getTicket(t, a, tk.id); got.body["status"] != subjects.StatusAccepted {
			t.Fatalf("ticket %s is %v before any allocator", tk.id, got.body["status"])
		}
	}
	check("from the records")

	e.startAllocator(t)
	for _, tk := range tickets {
		testkit.Eventually(t, 30*time.Second, func() bool {
			return e.getTicket(t, a, tk.id).body["status"] == subjects.StatusAllocated
		}, "ticket "+tk.id+" allocated")
		row, err := e.row(t, a.id, tk.id)
		if err != nil || row.Subject != tk.subject || row.Description != tk.description {
			t.Errorf("row of %s: content (%d, %d bytes), %v; want (%d, %d)", tk.id, len(row.Subject), len(row.Description), err,
				len(tk.subject), len(tk.description))
		}
	}
	check("from the rows")

	// A cancel keeps the content.
	if c := e.cancel(t, a, tickets[1].id); c.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", c.status, c.raw)
	}
	got := e.getTicket(t, a, tickets[1].id)
	if got.body["status"] != subjects.StatusCancelled {
		t.Fatalf("after cancel: %s", got.raw)
	}
	checkContent(t, "cancelled: GET", got.body, tickets[1].subject, tickets[1].description)
	checkContent(t, "cancelled: GET /tickets", e.listedTicket(t, a, tickets[1].id), tickets[1].subject, tickets[1].description)
}

// TestTicketContentBadInput: every bad subject or description, on
// create_ticket (HTTP and NATS) and allocate_slot (internal HTTP), is a
// 400 that names the member, and nothing is written: no slot record, no
// Idempotency-Key record.
func TestTicketContentBadInput(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Bad Content", "ops@bad-content.example")
	e.createWhenReady(t, a, subjects.Gold)
	hold := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": "GOLD"})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	slotID := hold.body["slot_id"].(string)
	base := e.slotRecords(t, a.id)
	keysBefore := len(e.idempotencyKeys(t, a.id))

	q := jsonString
	cases := []struct {
		name, member, value string // value: raw JSON
		code                string
		mention             string
	}{
		{"subject of 201 characters", "subject", q(strings.Repeat("é", 201)), codeInvalidField, "200"},
		{"description of 10241 bytes", "description", q(strings.Repeat("d", 10241)), codeInvalidField, "10240"},
		{"description of 10 KiB and one two-byte character", "description", q(strings.Repeat("d", 10239) + "é"), codeInvalidField, "10240"},
		{"newline in the subject", "subject", `"two\nlines"`, codeInvalidField, "control"},
		{"tab in the subject", "subject", `"a\tb"`, codeInvalidField, "control"},
		{"NUL in the subject", "subject", `"a\u0000b"`, codeInvalidField, "control"},
		{"DEL in the subject", "subject", `"a\u007fb"`, codeInvalidField, "control"},
		{"C1 control in the subject", "subject", `"a\u0085b"`, codeInvalidField, "control"},
		{"NUL in the description", "description", `"a\u0000b"`, codeInvalidField, "control"},
		{"escape in the description", "description", `"\u001b[2J"`, codeInvalidField, "control"},
		{"lone low surrogate in the subject", "subject", `"a\udc00"`, codeInvalidField, "UTF-8"},
		{"lone high surrogate in the description", "description", `"\ud800 x"`, codeInvalidField, "UTF-8"},
		{"subject a number", "subject", `42`, codeInvalidField, "string"},
		{"subject an object", "subject", `{"text":"x"}`, codeInvalidField, "string"},
		{"description an array", "description", `["x"]`, codeInvalidField, "string"},
		{"description a boolean", "description", `true`, codeInvalidField, "string"},
		{"description a number", "description", `1e3`, codeInvalidField, "string"},
		{"subject raw invalid UTF-8", "subject", "\"a\xffb\"", codeInvalidJSON, "UTF-8"},
	}
	for _, c := range cases {
		for _, via := range []string{"http", "nats", "allocate_slot", "idempotent"} {
			body := `{"client_id":` + q(a.id) + `,"ticket_type":"GOLD",` + q(c.member) + `:` + c.value + `}`
			var status float64
			var ecode, message string
			var got map[string]any
			switch via {
			case "http", "idempotent":
				var header http.Header
				if via == "idempotent" {
					header = http.Header{"Idempotency-Key": {"bad-" + c.member}}
				}
				r := e.do(t, request{method: "POST", path: "/create_ticket", token: a.token, header: header, body: body})
				status, got = float64(r.status), r.body
			case "nats":
				got = e.natsCall(t, a.id, subjects.OpCreateTicket, body, nil)
				status, _ = got["code"].(float64)
			case "allocate_slot":
				body = `{"client_id":` + q(a.id) + `,"ticket_type":"GOLD","slot_id":` + q(slotID) + `,` + q(c.member) + `:` + c.value + `}`
				r := doOn(t, e.internal, request{method: "POST", path: "/allocate_slot", body: body})
				status, got = float64(r.status), r.body
			}
			ecode, _ = got["error"].(string)
			message, _ = got["message"].(string)
			if status != http.StatusBadRequest || ecode != c.code || !strings.Contains(message, c.mention) ||
				(c.code == codeInvalidField && !strings.Contains(message, c.member)) {
				t.Errorf("%s via %s: %v %s %q, want 400 %s naming %s and %q", c.name, via, status, ecode, message, c.code,
					c.member, c.mention)
			}
		}
	}
	if n := e.slotRecords(t, a.id); n != base {
		t.Errorf("bad content wrote %d slot records", n-base)
	}
	if n := len(e.idempotencyKeys(t, a.id)); n != keysBefore {
		t.Errorf("bad content left %d Idempotency-Key records", n-keysBefore)
	}
	// The hold is still there: a good allocate_slot takes it.
	ok := e.internalDo(t, "/allocate_slot", map[string]any{"client_id": a.id, "ticket_type": "GOLD", "slot_id": slotID,
		"subject": "fine"})
	if ok.status != http.StatusCreated {
		t.Errorf("allocate_slot after the refusals: %d %s", ok.status, ok.raw)
	}
}

// TestTicketContentIdempotency: an Idempotency-Key's fingerprint covers
// the content: the same key with the same text replays, with other text
// (or none, or some where there was none) is idempotency_key_reused.
func TestTicketContentIdempotency(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Idem Content", "ops@idem-content.example")
	e.createWhenReady(t, a, subjects.Gold)
	base := e.slotRecords(t, a.id)

	key := http.Header{"Idempotency-Key": {"content-1"}}
	text := map[string]any{"subject": "Printer", "description": "on fire"}
	first := e.createWith(t, a, subjects.Gold, text, key)
	again := e.createWith(t, a, subjects.Gold, map[string]any{"description": "on fire", "subject": "Printer"}, key)
	if first.status != http.StatusCreated || again.status != http.StatusCreated || !reflect.DeepEqual(first.body, again.body) ||
		again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("same key and content twice:\n%d %s\n%d %s %v", first.status, first.raw, again.status, again.raw, again.header)
	}
	overNATS := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]any{"client_id": a.id, "ticket_type": "GOLD",
		"subject": "Printer", "description": "on fire"}, map[string][]string{"Idempotency-Key": {"content-1"}})
	if overNATS["ticket_id"] != first.body["ticket_id"] {
		t.Errorf("same key and content over NATS: %v", overNATS)
	}
	for name, other := range map[string]map[string]any{
		"other subject":     {"subject": "Printer!", "description": "on fire"},
		"other description": {"subject": "Printer", "description": "on fire."},
		"no description":    {"subject": "Printer"},
		"no content":        nil,
		"swapped":           {"subject": "on fire", "description": "Printer"},
	} {
		r := e.createWith(t, a, subjects.Gold, other, key)
		if r.status != http.StatusUnprocessableEntity || r.body["error"] != "idempotency_key_reused" {
			t.Errorf("same key, %s: %d %s", name, r.status, r.raw)
		}
	}
	// A key first used without content: null and "" are no content, and
	// the same request; text is another.
	plainKey := http.Header{"Idempotency-Key": {"content-2"}}
	p1 := e.createWith(t, a, subjects.Gold, nil, plainKey)
	p2 := e.createWith(t, a, subjects.Gold, map[string]any{"subject": nil, "description": ""}, plainKey)
	if p1.status != http.StatusCreated || p2.status != http.StatusCreated || p1.body["ticket_id"] != p2.body["ticket_id"] {
		t.Errorf("no content, then null and empty content, same key: %d %s / %d %s", p1.status, p1.raw, p2.status, p2.raw)
	}
	if r := e.createWith(t, a, subjects.Gold, map[string]any{"subject": "now with text"}, plainKey); r.status != http.StatusUnprocessableEntity {
		t.Errorf("same key, text added: %d %s", r.status, r.raw)
	}
	if n := e.slotRecords(t, a.id); n != base+2 {
		t.Errorf("%d new slot records, want 2 (one per key)", n-base)
	}
	got := e.getTicket(t, a, first.body["ticket_id"].(string))
	checkContent(t, "the key's ticket", got.body, "Printer", "on fire")
}
