package ingress

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// rfc3339UTC fails the test unless v is an RFC 3339 timestamp in UTC.
func rfc3339UTC(t *testing.T, field string, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") {
		t.Fatalf("%s = %v, want an RFC 3339 UTC timestamp", field, v)
	}
	return ts
}

func TestAccountSessionAndAgentLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	created := e.must(t, http.StatusCreated, request{method: "POST", path: "/create_account",
		body: `{"client_name":"Acme Support, Inc.","official_email":"Ops@Acme.example","password":"correct horse battery"}`})
	clientID, _ := created["client_id"].(string)
	if created["status"] != "created" || clientID == "" || created["sub_domain"] != "acme-support-inc" {
		t.Fatalf("create_account answered %v", created)
	}
	if e.registry.Len() != 1 {
		t.Errorf("registry Len = %d, want 1", e.registry.Len())
	}

	login := e.must(t, http.StatusOK, request{method: "POST", path: "/login",
		body: jsonBody(map[string]string{"client_id": clientID, "password": "correct horse battery"})})
	token, _ := login["token"].(string)
	if login["status"] != "ok" || login["client_id"] != clientID || login["sub_domain"] != "acme-support-inc" || token == "" {
		t.Fatalf("login answered %v", login)
	}
	if exp := rfc3339UTC(t, "expires_at", login["expires_at"]); exp.Before(time.Now()) {
		t.Errorf("expires_at %v is in the past", exp)
	}
	other := e.login(t, clientID) // a second session of the same tenant

	if got := e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: token}); !reflect.DeepEqual(got, map[string]any{"agents": []any{}}) {
		t.Errorf("GET /agents of a new tenant = %v", got)
	}

	agent := e.must(t, http.StatusCreated, request{method: "POST", path: "/agents", token: token,
		body: jsonBody(map[string]string{"client_id": clientID, "name": "Ada"})})
	agentID, _ := agent["agent_id"].(string)
	if agent["status"] != "created" || agentID == "" || agent["name"] != "Ada" || agent["agent_status"] != "available" {
		t.Fatalf("POST /agents answered %v", agent)
	}

	list := e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: token})
	agents, _ := list["agents"].([]any)
	if len(agents) != 1 {
		t.Fatalf("GET /agents = %v", list)
	}
	listed := agents[0].(map[string]any)
	if listed["agent_id"] != agentID || listed["name"] != "Ada" || listed["agent_status"] != "available" {
		t.Errorf("listed agent %v", listed)
	}
	since := rfc3339UTC(t, "available_since", listed["available_since"])
	rfc3339UTC(t, "created_at", listed["created_at"])

	off := e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + agentID, token: token,
		body: `{"agent_status":"unavailable"}`})
	if off["agent_id"] != agentID || off["agent_status"] != "unavailable" || off["available_since"] != nil {
		t.Errorf("PATCH unavailable answered %v", off)
	}
	rfc3339UTC(t, "updated_at", off["updated_at"])
	on := e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + agentID, token: token,
		body: jsonBody(map[string]string{"agent_status": "available", "client_id": clientID})})
	if on["agent_status"] != "available" || rfc3339UTC(t, "available_since", on["available_since"]).Before(since) {
		t.Errorf("PATCH available answered %v", on)
	}

	out := e.must(t, http.StatusOK, request{method: "POST", path: "/logout", token: token,
		body: jsonBody(map[string]string{"client_id": clientID})})
	if !reflect.DeepEqual(out, map[string]any{"status": "logged_out"}) {
		t.Errorf("logout answered %v", out)
	}
	resp := e.do(t, request{method: "GET", path: "/agents", token: token})
	if resp.status != http.StatusUnauthorized || resp.body["error"] != codeUnauthorized ||
		!strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("revoked token: %d %s %v", resp.status, resp.raw, resp.header)
	}
	// Logout ends the presented session only.
	e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: other})
}

func TestAccountConflictsAndLoginFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.openAccount(t, "Globex", "help@globex.example")

	// The e-mail is unique whatever its case; the name need not be.
	dup := e.do(t, request{method: "POST", path: "/create_account",
		body: `{"client_name":"Globex","official_email":"HELP@globex.EXAMPLE","password":"another long one"}`})
	if dup.status != http.StatusConflict || dup.body["error"] != codeEmailTaken || !strings.Contains(dup.body["message"].(string), "official_email") {
		t.Errorf("duplicate e-mail: %d %s", dup.status, dup.raw)
	}
	if e.registry.Len() != 1 {
		t.Errorf("registry Len = %d after the refused duplicate", e.registry.Len())
	}
	second := e.must(t, http.StatusCreated, request{method: "POST", path: "/create_account",
		body: `{"client_name":"Globex","official_email":"other@globex.example","password":"another long one"}`})
	if second["sub_domain"] == a.subDomain {
		t.Errorf("two tenants share sub_domain %v", a.subDomain)
	}

	wrongPassword := e.do(t, request{method: "POST", path: "/login",
		body: jsonBody(map[string]string{"client_id": a.id, "password": "not the password"})})
	unknownClient := e.do(t, request{method: "POST", path: "/login",
		body: jsonBody(map[string]string{"client_id": "no-such-client", "password": "correct horse battery"})})
	for _, resp := range []response{wrongPassword, unknownClient} {
		if resp.status != http.StatusUnauthorized || resp.body["error"] != codeInvalidCredentials {
			t.Errorf("bad login: %d %s", resp.status, resp.raw)
		}
	}
	if string(wrongPassword.raw) != string(unknownClient.raw) {
		t.Errorf("wrong password and unknown client answer differently:\n%s\n%s", wrongPassword.raw, unknownClient.raw)
	}
}

func TestReadyzAndMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.openAccount(t, "Initech", "it@initech.example")
	e.must(t, http.StatusOK, request{method: "GET", path: "/agents", token: a.token})
	e.must(t, http.StatusNotFound, request{method: "GET", path: "/agents/x/y"})

	if got := e.must(t, http.StatusOK, request{method: "GET", path: "/healthz"}); got["status"] != "ok" {
		t.Errorf("/healthz = %v", got)
	}
	if got := e.must(t, http.StatusOK, request{method: "GET", path: "/readyz"}); got["status"] != "ready" {
		t.Errorf("/readyz = %v", got)
	}
	// A second router on the same registry (as a restart of the wiring
	// would make) shares the collectors instead of failing.
	notReady := e.public(func(context.Context) error { return errors.New("tenant registry not loaded") })
	rec := httptest.NewRecorder()
	notReady.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"error":"not_ready"`) {
		t.Errorf("/readyz when not ready: %d %s", rec.Code, rec.Body)
	}

	rec = httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	text, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`tms_http_requests_total{code="201",listener="public",method="POST",route="/create_account"} 1`,
		`tms_http_requests_total{code="200",listener="public",method="GET",route="/agents"} 1`,
		`tms_http_requests_total{code="404",listener="public",method="GET",route="unmatched"} 1`,
		`tms_http_requests_total{code="503",listener="public",method="GET",route="/readyz"} 1`,
		`tms_http_request_duration_seconds_bucket{code="200",listener="public",method="POST",route="/login",le="+Inf"} 1`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
