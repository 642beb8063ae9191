package ingress

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"tms/tenants"
)

// TestBadInputsChangeNothing sends each endpoint bad input and checks the
// status, the error code and that nothing was written (I7).
func TestBadInputsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.openAccount(t, "Umbrella", "ops@umbrella.example")
	b := e.openAccount(t, "Cyberdyne", "ops@cyberdyne.example")
	newAgent := func(acc account) string {
		body := e.must(t, http.StatusCreated, request{method: "POST", path: "/agents", token: acc.token,
			body: jsonBody(map[string]string{"client_id": acc.id, "name": "first"})})
		return body["agent_id"].(string)
	}
	aAgent, bAgent := newAgent(a), newAgent(b)
	revoked := e.login(t, a.id)
	e.must(t, http.StatusOK, request{method: "POST", path: "/logout", token: revoked,
		body: jsonBody(map[string]string{"client_id": a.id})})

	snapshot := func() (int, [][]tenants.Agent) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var lists [][]tenants.Agent
		for _, id := range []string{a.id, b.id} {
			tn, err := e.registry.Get(ctx, id)
			if err != nil {
				t.Fatalf("Get %s: %v", id, err)
			}
			list, err := e.agents.List(ctx, tn)
			if err != nil {
				t.Fatalf("List %s: %v", id, err)
			}
			lists = append(lists, list)
		}
		return e.registry.Len(), lists
	}
	lenBefore, agentsBefore := snapshot()

	tokens := map[string]string{"a": a.token, "revoked": revoked,
		"garbage": "not-a-token", "unknown": strings.Repeat("A", 43)}
	oversized := `{"client_name":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	account := `"client_name":"Name","official_email":"new@example.com","password":"long enough pw"`
	patchA := "/agents/" + aAgent

	tests := []struct {
		name         string
		method, path string
		as           string // key of tokens; "" sends no Authorization
		auth         string // raw Authorization header
		contentType  string
		body         string
		status       int
		code         string
		mention      string // a word the message must contain
		allow        string
	}{
		// create_account
		{name: "create malformed", method: "POST", path: "/create_account", body: `{"client_name":`, status: 400, code: codeInvalidJSON},
		{name: "create unknown field", method: "POST", path: "/create_account", body: `{` + account + `,"plan":"gold"}`, status: 400, code: codeUnknownField, mention: "plan"},
		{name: "create case variant", method: "POST", path: "/create_account", body: `{"Client_Name":"Name","official_email":"new@example.com","password":"long enough pw"}`, status: 400, code: codeUnknownField, mention: "Client_Name"},
		{name: "create duplicate key", method: "POST", path: "/create_account", body: `{` + account + `,"password":"other long pw"}`, status: 400, code: codeInvalidJSON, mention: "password"},
		{name: "create trailing garbage", method: "POST", path: "/create_account", body: `{` + account + `}garbage`, status: 400, code: codeInvalidJSON},
		{name: "create two objects", method: "POST", path: "/create_account", body: `{` + account + `}{}`, status: 400, code: codeInvalidJSON},
		{name: "create wrong type", method: "POST", path: "/create_account", body: `{"client_name":42,"official_email":"new@example.com","password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "client_name"},
		{name: "create array password", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"new@example.com","password":["long enough pw"]}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "create null", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":null,"password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "official_email"},
		{name: "create missing field", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"new@example.com"}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "create bad email", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"not an email","password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "official_email"},
		{name: "create short password", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"new@example.com","password":"short"}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "create password with NUL", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"new@example.com","password":"long enough\u0000pw"}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "create password with BEL ESC", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"new@example.com","password":"long enough\u0007\u001bpw"}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "create empty name", method: "POST", path: "/create_account", body: `{"client_name":"  ","official_email":"new@example.com","password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "client_name"},
		{name: "create oversized", method: "POST", path: "/create_account", body: oversized, status: 413, code: codeBodyTooLarge},
		{name: "create text/plain", method: "POST", path: "/create_account", contentType: "text/plain", body: `{` + account + `}`, status: 415, code: codeUnsupportedMediaType},
		{name: "create empty body", method: "POST", path: "/create_account", status: 400, code: codeInvalidJSON},
		{name: "create email taken", method: "POST", path: "/create_account", body: `{"client_name":"Name","official_email":"OPS@umbrella.example","password":"long enough pw"}`, status: 409, code: codeEmailTaken, mention: "official_email"},

		// login
		{name: "login malformed", method: "POST", path: "/login", body: `{"client_id":"x",}`, status: 400, code: codeInvalidJSON},
		{name: "login unknown field", method: "POST", path: "/login", body: `{"client_id":"x","password":"long enough pw","remember":true}`, status: 400, code: codeUnknownField, mention: "remember"},
		{name: "login wrong type", method: "POST", path: "/login", body: `{"client_id":7,"password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "login malformed client_id", method: "POST", path: "/login", body: `{"client_id":"Not/An/Id","password":"long enough pw"}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "login missing password", method: "POST", path: "/login", body: `{"client_id":"x"}`, status: 400, code: codeInvalidField, mention: "password"},
		{name: "login wrong password", method: "POST", path: "/login", body: `{"client_id":"` + a.id + `","password":"wrong password"}`, status: 401, code: codeInvalidCredentials},

		// logout
		{name: "logout no token", method: "POST", path: "/logout", body: `{"client_id":"` + a.id + `"}`, status: 401, code: codeUnauthorized},
		{name: "logout garbage token", method: "POST", path: "/logout", as: "garbage", body: `{"client_id":"` + a.id + `"}`, status: 401, code: codeUnauthorized},
		{name: "logout revoked token", method: "POST", path: "/logout", as: "revoked", body: `{"client_id":"` + a.id + `"}`, status: 401, code: codeUnauthorized},
		{name: "logout other tenant", method: "POST", path: "/logout", as: "a", body: `{"client_id":"` + b.id + `"}`, status: 403, code: codeForbidden, mention: "client_id"},
		{name: "logout malformed client_id", method: "POST", path: "/logout", as: "a", body: `{"client_id":"A B"}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "logout missing client_id", method: "POST", path: "/logout", as: "a", body: `{}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "logout no body", method: "POST", path: "/logout", as: "a", status: 400, code: codeInvalidJSON},
		{name: "logout unknown field", method: "POST", path: "/logout", as: "a", body: `{"client_id":"` + a.id + `","all":true}`, status: 400, code: codeUnknownField, mention: "all"},

		// POST /agents
		{name: "agents no token", method: "POST", path: "/agents", body: `{"client_id":"` + a.id + `","name":"n"}`, status: 401, code: codeUnauthorized},
		{name: "agents basic auth", method: "POST", path: "/agents", auth: "Basic dXNlcjpwYXNz", body: `{"client_id":"` + a.id + `","name":"n"}`, status: 401, code: codeUnauthorized},
		{name: "agents bearer without token", method: "POST", path: "/agents", auth: "Bearer ", body: `{"client_id":"` + a.id + `","name":"n"}`, status: 401, code: codeUnauthorized},
		{name: "agents unknown token", method: "POST", path: "/agents", as: "unknown", body: `{"client_id":"` + a.id + `","name":"n"}`, status: 401, code: codeUnauthorized},
		{name: "agents revoked token", method: "POST", path: "/agents", as: "revoked", body: `{"client_id":"` + a.id + `","name":"n"}`, status: 401, code: codeUnauthorized},
		{name: "agents other tenant", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + b.id + `","name":"n"}`, status: 403, code: codeForbidden, mention: "client_id"},
		{name: "agents missing client_id", method: "POST", path: "/agents", as: "a", body: `{"name":"n"}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "agents missing name", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `"}`, status: 400, code: codeInvalidField, mention: "name"},
		{name: "agents empty name", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":""}`, status: 400, code: codeInvalidField, mention: "name"},
		{name: "agents long name", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":"` + strings.Repeat("n", 101) + `"}`, status: 400, code: codeInvalidField, mention: "name"},
		{name: "agents null name", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":null}`, status: 400, code: codeInvalidField, mention: "name"},
		{name: "agents wrong type", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":{"first":"n"}}`, status: 400, code: codeInvalidField, mention: "name"},
		{name: "agents case variant", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","Name":"n"}`, status: 400, code: codeUnknownField, mention: "Name"},
		{name: "agents duplicate key", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":"n","name":"m"}`, status: 400, code: codeInvalidJSON, mention: "name"},
		{name: "agents trailing garbage", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":"n"} x`, status: 400, code: codeInvalidJSON},
		{name: "agents oversized", method: "POST", path: "/agents", as: "a", body: `{"client_id":"` + a.id + `","name":"` + strings.Repeat("n", maxBodyBytes) + `"}`, status: 413, code: codeBodyTooLarge},
		{name: "agents form", method: "POST", path: "/agents", as: "a", contentType: "application/x-www-form-urlencoded", body: "client_id=" + a.id + "&name=n", status: 415, code: codeUnsupportedMediaType},

		// PATCH /agents/{agent_id}
		{name: "patch no token", method: "PATCH", path: patchA, body: `{"agent_status":"unavailable"}`, status: 401, code: codeUnauthorized},
		{name: "patch revoked token", method: "PATCH", path: patchA, as: "revoked", body: `{"agent_status":"unavailable"}`, status: 401, code: codeUnauthorized},
		{name: "patch other tenant's agent", method: "PATCH", path: "/agents/" + bAgent, as: "a", body: `{"agent_status":"unavailable"}`, status: 404, code: codeAgentNotFound},
		{name: "patch unknown agent", method: "PATCH", path: "/agents/no-such-agent", as: "a", body: `{"agent_status":"unavailable"}`, status: 404, code: codeAgentNotFound},
		{name: "patch malformed agent id", method: "PATCH", path: "/agents/NOT.AN.ID", as: "a", body: `{"agent_status":"unavailable"}`, status: 404, code: codeAgentNotFound},
		{name: "patch other tenant client_id", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":"unavailable","client_id":"` + b.id + `"}`, status: 403, code: codeForbidden, mention: "client_id"},
		{name: "patch bad status", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":"UNAVAILABLE"}`, status: 400, code: codeInvalidField, mention: "agent_status"},
		{name: "patch status type", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":false}`, status: 400, code: codeInvalidField, mention: "agent_status"},
		{name: "patch null status", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":null}`, status: 400, code: codeInvalidField, mention: "agent_status"},
		{name: "patch null client_id", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":"unavailable","client_id":null}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "patch unknown field", method: "PATCH", path: patchA, as: "a", body: `{"agent_status":"unavailable","name":"x"}`, status: 400, code: codeUnknownField, mention: "name"},
		{name: "patch text/plain", method: "PATCH", path: patchA, as: "a", contentType: "text/plain", body: `{"agent_status":"unavailable"}`, status: 415, code: codeUnsupportedMediaType},

		// GET /agents
		{name: "list no token", method: "GET", path: "/agents", status: 401, code: codeUnauthorized},
		{name: "list garbage token", method: "GET", path: "/agents", as: "garbage", status: 401, code: codeUnauthorized},
		{name: "list revoked token", method: "GET", path: "/agents", as: "revoked", status: 401, code: codeUnauthorized},

		// routing
		{name: "unknown path", method: "GET", path: "/ticketz", as: "a", status: 404, code: codeNotFound},
		{name: "internal path on public", method: "POST", path: "/validate_eta", body: `{}`, status: 404, code: codeNotFound},
		{name: "nested unknown path", method: "GET", path: "/agents/" + aAgent + "/x", as: "a", status: 404, code: codeNotFound},
		{name: "delete agents", method: "DELETE", path: "/agents", as: "a", status: 405, code: codeMethodNotAllowed, allow: "GET,POST"},
		{name: "put agent", method: "PUT", path: patchA, as: "a", body: `{"agent_status":"unavailable"}`, status: 405, code: codeMethodNotAllowed, allow: "GET,PATCH"},
		{name: "get login", method: "GET", path: "/login", status: 405, code: codeMethodNotAllowed, allow: "POST"},
		{name: "post metrics", method: "POST", path: "/metrics", body: `{}`, status: 405, code: codeMethodNotAllowed, allow: "GET"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				resp := e.do(t, request{method: tt.method, path: tt.path, token: tokens[tt.as], auth: tt.auth,
					contentType: tt.contentType, body: tt.body})
				if resp.status != tt.status || resp.body["status"] != "error" || resp.body["error"] != tt.code {
					t.Fatalf("%d %s, want %d %s", resp.status, resp.raw, tt.status, tt.code)
				}
				msg, _ := resp.body["message"].(string)
				if msg == "" || !strings.Contains(msg, tt.mention) {
					t.Errorf("message %q does not mention %q", msg, tt.mention)
				}
				if tt.status == http.StatusUnauthorized && tt.code == codeUnauthorized &&
					!strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer (%v)", resp.header)
				}
				if got := strings.Join(resp.header.Values("Allow"), ","); got != tt.allow {
					t.Errorf("Allow %q, want %q", got, tt.allow)
				}
			})
		}
	})

	lenAfter, agentsAfter := snapshot()
	if lenAfter != lenBefore {
		t.Errorf("registry Len %d -> %d", lenBefore, lenAfter)
	}
	if !reflect.DeepEqual(agentsBefore, agentsAfter) {
		t.Errorf("agents changed:\nbefore %+v\nafter  %+v", agentsBefore, agentsAfter)
	}
	// None of the refused logouts ended a session.
	e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: a.token})
	e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: b.token})

	// An expired token is refused like a revoked one.
	e.clock.Advance(25 * time.Hour)
	resp := e.do(t, request{method: "GET", path: "/agents", token: a.token})
	if resp.status != http.StatusUnauthorized || resp.body["error"] != codeUnauthorized {
		t.Errorf("expired token: %d %s", resp.status, resp.raw)
	}
}
