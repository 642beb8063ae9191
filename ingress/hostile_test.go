package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"tms/subjects"
	"tms/tenants"
)

// endpoint is one JSON endpoint with a body it would accept: hostile
// variants are derived from it by breaking one thing at a time.
type endpoint struct {
	name         string
	internal     bool // the internal listener (no bearer auth)
	auth         bool // needs a bearer token
	method, path string
	members      [][2]string // key, raw JSON value, in order; members[0] is a string field
	// idCode is the answer for members[0] holding a string that is no
	// valid value (control characters, too long, path-like): most fields
	// are 400 invalid_field, a ticket_id is 404 like any ticket that does
	// not exist.
	idStatus int
	idCode   string
}

func (ep endpoint) body(members [][2]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%s", jsonString(m[0]), m[1])
	}
	b.WriteByte('}')
	return b.String()
}

// with returns the members with the first one's value replaced.
func (ep endpoint) with(raw string) [][2]string {
	out := append([][2]string(nil), ep.members...)
	out[0] = [2]string{out[0][0], raw}
	return out
}

// hostileCase is one request and the refusal it must get.
type hostileCase struct {
	name   string
	ep     endpoint
	req    request
	status int
	code   string
}

// bodyCases are the body-level attacks, the same for every JSON endpoint.
func bodyCases(ep endpoint) []hostileCase {
	valid := ep.body(ep.members)
	first := ep.members[0][0]
	inner := valid[1 : len(valid)-1]
	big := `{"` + first + `":"` + strings.Repeat("x", 1<<20+1-len(first)-7) + `"}`
	type v struct {
		name, ct, body string
		status         int
		code           string
	}
	vs := []v{
		{"malformed", "", `{"` + first + `":`, 400, codeInvalidJSON},
		{"trailing garbage", "", valid + `garbage`, 400, codeInvalidJSON},
		{"trailing second object", "", valid + `{}`, 400, codeInvalidJSON},
		{"trailing comma", "", valid[:len(valid)-1] + `,}`, 400, codeInvalidJSON},
		{"duplicate key", "", `{` + inner + `,` + jsonString(first) + `:` + ep.members[0][1] + `}`, 400, codeInvalidJSON},
		{"case-variant key", "", ep.body(append([][2]string{{strings.ToUpper(first), ep.members[0][1]}}, ep.members[1:]...)), 400, codeUnknownField},
		{"key with a NUL", "", ep.body(append([][2]string{{first + "\x00", ep.members[0][1]}}, ep.members[1:]...)), 400, codeUnknownField},
		{"invalid UTF-8 key", "", `{"` + first + "\xff\xfe" + `":` + ep.members[0][1] + `}`, 400, codeInvalidJSON},
		{"invalid UTF-8 value", "", ep.body(ep.with("\"ab\xc3\x28\"")), 400, codeInvalidJSON},
		{"raw control character in a string", "", ep.body(ep.with("\"ab\x01cd\"")), 400, codeInvalidJSON},
		{"null", "", ep.body(ep.with(`null`)), 400, codeInvalidField},
		{"number for a string", "", ep.body(ep.with(`42`)), 400, codeInvalidField},
		{"huge number 1e400", "", ep.body(ep.with(`1e400`)), 400, codeInvalidField},
		{"huge integer", "", ep.body(ep.with(`99999999999999999999`)), 400, codeInvalidField},
		{"boolean for a string", "", ep.body(ep.with(`true`)), 400, codeInvalidField},
		{"object for a string", "", ep.body(ep.with(`{"` + first + `":"x"}`)), 400, codeInvalidField},
		{"array for a string", "", ep.body(ep.with(`["x"]`)), 400, codeInvalidField},
		{"deep nesting", "", ep.body(ep.with(strings.Repeat("[", 20000) + strings.Repeat("]", 20000))), 400, codeInvalidJSON},
		{"missing field", "", ep.body(ep.members[1:]), 400, codeInvalidField},
		{"empty object", "", `{}`, 400, codeInvalidField},
		{"top-level array", "", `[` + valid + `]`, 400, codeInvalidJSON},
		{"top-level string", "", `"` + first + `"`, 400, codeInvalidJSON},
		{"byte order mark", "", "\ufeff" + valid, 400, codeInvalidJSON},
		{"NUL byte", "", "\x00" + valid, 400, codeInvalidJSON},
		{"escaped NUL in the value", "", ep.body(ep.with(`"x\u0000y"`)), ep.idStatus, ep.idCode},
		{"escaped ESC in the value", "", ep.body(ep.with(`"\u001b[2Jx"`)), ep.idStatus, ep.idCode},
		{"1 MiB + 1 body", "", big, 413, codeBodyTooLarge},
		{"text/plain", "text/plain", valid, 415, codeUnsupportedMediaType},
		{"latin-1 charset", "application/json; charset=latin1", valid, 415, codeUnsupportedMediaType},
		{"json with extra parameter", "application/json; version=2", valid, 415, codeUnsupportedMediaType},
		{"form", "application/x-www-form-urlencoded", first + "=x", 415, codeUnsupportedMediaType},
		{"bad media type", "application/json;;;", valid, 415, codeUnsupportedMediaType},
	}
	var out []hostileCase
	for _, c := range vs {
		out = append(out, hostileCase{name: c.name, ep: ep, status: c.status, code: c.code,
			req: request{method: ep.method, path: ep.path, contentType: c.ct, body: c.body}})
	}
	return out
}

// TestHostileInputsChangeNothing sends every JSON endpoint the body-level
// attacks, every field its own bad values and every authenticated route
// missing, malformed, forged, logged-out and expired tokens; each gets its
// 4xx and code, a well-formed JSON answer, and nothing is written (I7):
// no tenant, agent, slot record, slot key or idempotency key, no
// session ended.
func TestHostileInputsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{holdTTL: time.Hour}) // the hold below must outlive the test
	a, aAgent := e.tenantWithAgent(t, "Hostile Alpha", "ops@hostile-alpha.example")
	b, _ := e.tenantWithAgent(t, "Hostile Beta", "ops@hostile-beta.example")
	aTicket := e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)
	e.createWhenReady(t, b, subjects.Gold)
	hold := doOn(t, e.internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Silver})})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	aHold := hold.body["slot_id"].(string)
	aLogout := e.login(t, a.id) // the logout cases' own session
	bOut := e.login(t, b.id)
	e.must(t, http.StatusOK, request{method: "POST", path: "/logout", token: bOut, body: jsonBody(map[string]string{"client_id": b.id})})
	// Right length and alphabet, wrong hash.
	swap := byte('A')
	if a.token[20] == swap {
		swap = 'B'
	}
	forged := a.token[:20] + string(swap) + a.token[21:]

	q := jsonString
	long := strings.Repeat("a", subjects.MaxIDLen+1)
	endpoints := []endpoint{
		{name: "create_account", method: "POST", path: "/create_account", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_name", q("Hostile Gamma")}, {"official_email", q("ops@hostile-gamma.example")}, {"password", q("long enough pw")}}},
		{name: "login", method: "POST", path: "/login", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"password", q("correct horse battery")}}},
		{name: "logout", auth: true, method: "POST", path: "/logout", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}}},
		{name: "create agent", auth: true, method: "POST", path: "/agents", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"name", q("agent")}}},
		{name: "patch agent", auth: true, method: "PATCH", path: "/agents/" + aAgent, idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"agent_status", q("unavailable")}, {"client_id", q(a.id)}}},
		{name: "create_ticket", auth: true, method: "POST", path: "/create_ticket", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"ticket_type", q("GOLD")}}},
		{name: "cancel_ticket", auth: true, method: "POST", path: "/cancel_ticket", idStatus: 404, idCode: codeTicketNotFound,
			members: [][2]string{{"ticket_id", q(aTicket)}}},
		{name: "validate_eta", internal: true, method: "POST", path: "/validate_eta", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"ticket_type", q("GOLD")}}},
		{name: "allocate_slot", internal: true, method: "POST", path: "/allocate_slot", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"ticket_type", q("GOLD")}, {"slot_id", q(aHold)}, {"subject", q("s")}}},
		// With content: what is hostile in the other members stays so.
		{name: "create_ticket with content", auth: true, method: "POST", path: "/create_ticket", idStatus: 400, idCode: codeInvalidField,
			members: [][2]string{{"client_id", q(a.id)}, {"ticket_type", q("GOLD")}, {"subject", q("s")}, {"description", q("d\n")}}},
	}
	var cases []hostileCase
	for _, ep := range endpoints {
		cases = append(cases, bodyCases(ep)...)
		// members[0] with values no field may hold.
		for name, v := range map[string]string{"too long": long, "path traversal": "../" + a.id, "wildcard": a.id + ".>",
			"upper case": strings.ToUpper(a.id), "space": " ", "tab": "\t" + a.id, "zero-width space": a.id + "\u200b"} {
			if ep.members[0][0] == "client_name" || ep.members[0][0] == "agent_status" {
				continue // names and statuses have their own cases below
			}
			cases = append(cases, hostileCase{name: name, ep: ep, status: ep.idStatus, code: ep.idCode,
				req: request{method: ep.method, path: ep.path, body: ep.body(ep.with(q(v)))}})
		}
		if !ep.auth {
			continue
		}
		valid := ep.body(ep.members)
		for name, r := range map[string]request{
			"no token":                {},
			"empty bearer":            {auth: "Bearer "},
			"bearer without space":    {auth: "Bearer" + a.token},
			"two spaces":              {auth: "Bearer  " + a.token},
			"basic scheme":            {auth: "Basic " + a.token},
			"forged token":            {token: forged},
			"random token":            {token: strings.Repeat("x", len(a.token))},
			"other tenant logged out": {token: bOut},
			"oversized token":         {token: strings.Repeat("A", 257)},
			"token with NUL":          {auth: "Bearer " + a.token[:10] + "\x00" + a.token[11:]},
			"two headers":             {header: http.Header{"Authorization": {"Bearer " + a.token, "Bearer " + b.token}}},
		} {
			r.method, r.path, r.body = ep.method, ep.path, valid
			cases = append(cases, hostileCase{name: name, ep: ep, req: r, status: 401, code: codeUnauthorized})
		}
	}
	cr := endpoints[0]
	agents := endpoints[3]
	patch := endpoints[4]
	tickets := endpoints[5]
	allocate := endpoints[8]
	content := endpoints[9]
	field := func(ep endpoint, i int, raw string, status int, code string) hostileCase {
		members := append([][2]string(nil), ep.members...)
		members[i] = [2]string{members[i][0], raw}
		return hostileCase{name: members[i][0] + "=" + raw, ep: ep, status: status, code: code,
			req: request{method: ep.method, path: ep.path, body: ep.body(members)}}
	}
	cases = append(cases,
		field(cr, 0, `"Evil\u0000Corp"`, 400, codeInvalidField),
		field(cr, 0, `"\u001b[2JEvil"`, 400, codeInvalidField),
		field(cr, 0, `"Evil\u007fCorp"`, 400, codeInvalidField),
		field(cr, 0, q(strings.Repeat("é", 201)), 400, codeInvalidField),
		field(cr, 1, `"ops@evil.example\u0000"`, 400, codeInvalidField),
		field(cr, 1, `"ops@evil.example\r\nBcc: all@example.com"`, 400, codeInvalidField),
		field(cr, 1, `"Evil <ops@evil.example>"`, 400, codeInvalidField),
		field(cr, 1, `"OPS@HOSTILE-ALPHA.EXAMPLE"`, 409, codeEmailTaken),
		field(cr, 2, `"short"`, 400, codeInvalidField),
		field(cr, 2, q(strings.Repeat("p", 1025)), 400, codeInvalidField),
		field(agents, 1, `"agent\u0000"`, 400, codeInvalidField),
		field(agents, 1, `"\u001b]0;pwned\u0007"`, 400, codeInvalidField),
		field(agents, 1, `"  "`, 400, codeInvalidField),
		field(agents, 1, `1e400`, 400, codeInvalidField),
		field(patch, 0, `"available\u0000"`, 400, codeInvalidField),
		field(patch, 0, `"AVAILABLE"`, 400, codeInvalidField),
		field(patch, 0, `""`, 400, codeInvalidField),
		field(tickets, 1, `"GOLD\u0000"`, 400, codeInvalidField),
		field(tickets, 1, `"ＧＯＬＤ"`, 400, codeInvalidField),
		field(tickets, 1, `"GOLD "`, 400, codeInvalidField),
		field(tickets, 1, `99999999999999999999`, 400, codeInvalidField),
		field(allocate, 2, `"../../`+aHold+`"`, 400, codeInvalidField),
		field(allocate, 2, q(aHold+"x"), 400, codeInvalidField),
		field(allocate, 2, q(strings.ToUpper(aHold)), 400, codeInvalidField),
		field(allocate, 2, `"\u0000"`, 400, codeInvalidField),
		field(allocate, 2, q(strings.Repeat("2", 200)), 400, codeInvalidField),
		field(allocate, 2, `1e400`, 400, codeInvalidField),
		field(allocate, 1, `"BRONZE\u001b"`, 400, codeInvalidField),
		field(allocate, 3, `"s\u0000"`, 400, codeInvalidField),
		field(content, 2, `"a\u0000b"`, 400, codeInvalidField),
		field(content, 2, `"\u001b]0;pwned\u0007"`, 400, codeInvalidField),
		field(content, 2, `"\udc00"`, 400, codeInvalidField),
		field(content, 2, q(strings.Repeat("é", 201)), 400, codeInvalidField),
		field(content, 2, `{"subject":"x"}`, 400, codeInvalidField),
		field(content, 3, `"\u001b[2J"`, 400, codeInvalidField),
		field(content, 3, `"\ud800"`, 400, codeInvalidField),
		field(content, 3, q(strings.Repeat("d", 10241)), 400, codeInvalidField),
		field(content, 3, `1e400`, 400, codeInvalidField),
	)
	// Ids in paths: nothing but a ticket or agent of the caller is found,
	// and what is not found is one answer.
	for _, p := range []string{long, "T" + aTicket[1:], "..", "%2e%2e", "..%2f..%2fagents", "a%00b", "a%2Eb", "%2A", "%3E",
		"%E2%80%8B" + aTicket, "%ff%fe", aTicket + "%20", aTicket + "%0a"} {
		cases = append(cases,
			hostileCase{name: "GET /tickets/" + p, ep: endpoint{auth: true}, status: 404, code: codeTicketNotFound,
				req: request{method: "GET", path: "/tickets/" + p}},
			hostileCase{name: "PATCH /agents/" + p, ep: endpoint{auth: true}, status: 404, code: codeAgentNotFound,
				req: request{method: "PATCH", path: "/agents/" + p, body: `{"agent_status":"unavailable"}`}})
	}
	for _, p := range []string{"/tickets/../agents", "/tickets/" + aTicket + "/..", "/tickets/", "/agents/" + aAgent + "/", "/tickets//" + aTicket} {
		cases = append(cases, hostileCase{name: "GET " + p, ep: endpoint{auth: true}, status: 404, code: codeNotFound,
			req: request{method: "GET", path: p}})
	}

	// The same body attacks over the NATS API, on A's own subjects: the
	// same refusal, its status as "code" (no Content-Type there; NATS
	// caps a payload at 1 MiB, so the oversized body is 64 KiB + 1).
	ops := map[string]string{"create_ticket": subjects.OpCreateTicket, "cancel_ticket": subjects.OpCancelTicket,
		"validate_eta": subjects.OpValidateETA, "allocate_slot": subjects.OpAllocateSlot}
	natsEndpoints := []endpoint{{name: "get_ticket", idStatus: 404, idCode: codeTicketNotFound,
		members: [][2]string{{"ticket_id", q(aTicket)}}}}
	for _, ep := range endpoints {
		if op, ok := ops[ep.name]; ok {
			ep.path = op
			natsEndpoints = append(natsEndpoints, ep)
		}
	}
	natsEndpoints[0].path = subjects.OpGetTicket
	var natsCases []hostileCase
	for _, ep := range natsEndpoints {
		for _, c := range bodyCases(ep) {
			switch {
			case c.req.contentType != "":
				continue
			case c.status == http.StatusRequestEntityTooLarge:
				c.req.body = `{"` + ep.members[0][0] + `":"` + strings.Repeat("x", maxBodyBytes) + `"}`
			}
			c.req.path = subjects.API(a.id, ep.path)
			natsCases = append(natsCases, c)
		}
	}

	snapshot := func() hostileSnapshot {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s := hostileSnapshot{tenants: e.registry.Len(), marks: e.writes(t, a.id, b.id)}
		for _, id := range []string{a.id, b.id} {
			tn, err := e.registry.Get(ctx, id)
			if err != nil {
				t.Fatalf("Get %s: %v", id, err)
			}
			list, err := e.agents.List(ctx, tn)
			if err != nil {
				t.Fatalf("List %s: %v", id, err)
			}
			s.agents = append(s.agents, list)
		}
		return s
	}
	before := snapshot()
	t.Run("cases", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.ep.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				h := e.handler
				if c.ep.internal {
					h = e.internal
				}
				req := c.req
				if c.ep.auth && req.token == "" && req.auth == "" && req.header == nil && c.status != 401 {
					req.token = a.token
					if c.ep.name == "logout" {
						req.token = aLogout
					}
				}
				checkRefusal(t, doOn(t, h, req), c.status, c.code)
			})
		}
		for _, c := range natsCases {
			t.Run("nats "+c.ep.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				resp := response{}
				resp.status, resp.raw = e.natsRaw(t, c.req.path, c.req.body, nil)
				if err := json.Unmarshal(resp.raw, &resp.body); err != nil {
					t.Fatalf("reply %q: %v", resp.raw, err)
				}
				checkRefusal(t, resp, c.status, c.code)
			})
		}
	})
	if after := snapshot(); !after.equal(before) {
		t.Errorf("hostile requests wrote:\nbefore %+v\nafter  %+v", before, after)
	}
	// No refused logout ended a session.
	for _, tok := range []string{a.token, aLogout, b.token} {
		e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: tok})
	}
	if got := e.getTicket(t, a, aTicket); got.status != http.StatusOK || got.body["status"] != subjects.StatusAccepted {
		t.Errorf("a's ticket after the attacks: %d %s", got.status, got.raw)
	}

	// Expired tokens, on every authenticated route with a valid body.
	e.env.clock.Advance(25 * time.Hour)
	before = snapshot()
	for _, ep := range endpoints {
		if !ep.auth {
			continue
		}
		resp := e.do(t, request{method: ep.method, path: ep.path, token: a.token, body: ep.body(ep.members)})
		checkRefusal(t, resp, 401, codeUnauthorized)
	}
	for _, path := range []string{"/agents", "/tickets/" + aTicket} {
		checkRefusal(t, e.do(t, request{method: "GET", path: path, token: a.token}), 401, codeUnauthorized)
	}
	if after := snapshot(); !after.equal(before) {
		t.Errorf("requests with expired tokens wrote:\nbefore %+v\nafter  %+v", before, after)
	}
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

type hostileSnapshot struct {
	tenants int
	agents  [][]tenants.Agent
	marks   writeMarks
}

func (s hostileSnapshot) equal(o hostileSnapshot) bool {
	return s.tenants == o.tenants && reflect.DeepEqual(s.agents, o.agents) && s.marks.within(o.marks) && o.marks.within(s.marks)
}

// checkRefusal checks an error answer: status, code, a message, the
// error body's shape, well-formed UTF-8 with no raw control characters
// (whatever the request carried is escaped), and the 401 challenge.
func checkRefusal(t *testing.T, resp response, status int, code string) {
	t.Helper()
	if resp.status != status || resp.body["error"] != code {
		t.Fatalf("%d %s, want %d %s", resp.status, resp.raw, status, code)
	}
	if st := resp.body["status"]; st != "error" && st != statusRejected && st != statusUnavailable {
		t.Errorf("body status %v", st)
	}
	if msg, _ := resp.body["message"].(string); msg == "" {
		t.Errorf("no message: %s", resp.raw)
	}
	raw := bytes.TrimSuffix(resp.raw, []byte("\n"))
	if !utf8.Valid(raw) || bytes.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Errorf("answer is not clean UTF-8 text: %q", resp.raw)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without a Bearer challenge: %v", resp.header)
	}
}
