package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/tenants"
)

// env is a public router over real tenants components: an embedded
// JetStream server, the test Postgres server, and the Run loops of the
// registry, sessions and pools, owned by the test and stopped in Cleanup.
type env struct {
	t        testing.TB
	nats     *testkit.NATS
	nc       *nats.Conn
	js       jetstream.JetStream
	pools    *tenants.Pools
	tickets  *tenants.Tickets
	registry *tenants.Registry
	sessions *tenants.Sessions
	agents   *tenants.Agents
	metrics  *prometheus.Registry
	handler  http.Handler
	clock    *testkit.Clock // the sessions' clock, to expire tokens
}

func newEnv(t testing.TB) *env {
	t.Helper()
	logger := testkit.Logger(t)
	srv := testkit.StartNATS(t)
	nc := srv.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx := testkit.Context(t, 2*time.Minute)

	prov, err := tenants.NewProvisioner(tenants.ProvisionerConfig{
		ServerURLs: []string{testkit.PostgresURL()}, DBPrefix: testkit.DatabasePrefix(t), Logger: logger,
	})
	if err != nil {
		t.Fatalf("NewProvisioner: %v", err)
	}
	t.Cleanup(prov.Close)
	registry, err := tenants.NewRegistry(ctx, tenants.RegistryConfig{JS: js, Provisioner: prov, Logger: logger})
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	clock := testkit.NewClock(time.Now())
	sessions, err := tenants.NewSessions(ctx, tenants.SessionsConfig{JS: js, Logger: logger, Now: clock.Now})
	if err != nil {
		t.Fatalf("NewSessions: %v", err)
	}
	pools := tenants.NewPools(tenants.PoolsConfig{Provisioner: prov, Logger: logger})
	// The agents' clock is the env's, frozen before any ticket clock is
	// made: an agent is then available from before every ticket's
	// creation, and a test that fills a window counts the same minutes
	// whichever side of a minute boundary the wall clock is on (with the
	// wall clock, an agent registered just after one lost a minute: 118
	// GOLD tickets instead of 119-121).
	agents, err := tenants.NewAgents(ctx, tenants.AgentsConfig{Pools: pools, JS: js, Logger: logger, Now: clock.Now})
	if err != nil {
		t.Fatalf("NewAgents: %v", err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{
		"registry": registry.Run, "sessions": sessions.Run, "pools": pools.Run,
	} {
		wg.Go(func() {
			if err := run(runCtx); err != nil {
				t.Errorf("%s Run: %v", name, err)
			}
		})
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	testkit.Eventually(t, 20*time.Second, func() bool { return registry.Ready() && sessions.Ready() },
		"registry and sessions to load")

	e := &env{t: t, nats: srv, nc: nc, js: js, pools: pools, tickets: tenants.NewTickets(pools, logger),
		registry: registry, sessions: sessions, agents: agents, metrics: prometheus.NewRegistry(), clock: clock}
	e.handler = e.public(func(context.Context) error { return nil })
	return e
}

// public builds a public router over the env's components.
func (e *env) public(ready func(context.Context) error) http.Handler {
	e.t.Helper()
	cfg := e.config(ready)
	e.withAdmission(&cfg, admission.Config{})
	h, err := NewPublic(cfg)
	if err != nil {
		e.t.Fatalf("NewPublic: %v", err)
	}
	return h
}

// config is the ingress configuration over the env's components, but for
// its admission service (withAdmission).
func (e *env) config(ready func(context.Context) error) Config {
	return Config{
		Registry: e.registry, Sessions: e.sessions, Agents: e.agents,
		NC: e.nc, JS: e.js,
		Logger: testkit.Logger(e.t), Metrics: e.metrics, Gatherer: e.metrics, Ready: ready,
	}
}

// withAdmission gives cfg its admission service, built once for every
// router and NATS API made from cfg, as cmd/tms does: over the env's
// components, gated by cfg.Overload (limits with the defaults when cfg
// has none, shared by all of them too). acfg brings the clock, the ETA
// timeout and the hooks.
func (e *env) withAdmission(cfg *Config, acfg admission.Config) {
	e.t.Helper()
	if cfg.Overload == nil {
		cfg.Overload = newOverload(e.t, cfg, OverloadConfig{})
	}
	acfg.NC, acfg.JS, acfg.Tickets, acfg.Agents, acfg.Gate = e.nc, e.js, e.tickets, e.agents, cfg.Overload
	if acfg.Logger == nil {
		acfg.Logger = cfg.Logger
	}
	s, err := admission.New(acfg)
	if err != nil {
		e.t.Fatalf("admission.New: %v", err)
	}
	cfg.Admission = s
}

// request is one HTTP request to the router.
type request struct {
	method, path string
	token        string // "" for none; sent as "Bearer <token>"
	auth         string // a raw Authorization header, overrides token
	contentType  string // "" means application/json when there is a body
	body         string
	header       http.Header // extra request headers
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(t testing.TB, req request) response {
	t.Helper()
	return doOn(t, e.handler, req)
}

// doOn sends req to the handler h and decodes the JSON answer.
func doOn(t testing.TB, h http.Handler, req request) response {
	t.Helper()
	r := httptest.NewRequest(req.method, req.path, bytes.NewReader([]byte(req.body)))
	if req.body != "" {
		ct := req.contentType
		if ct == "" {
			ct = "application/json"
		}
		r.Header.Set("Content-Type", ct)
	} else if req.contentType != "" {
		r.Header.Set("Content-Type", req.contentType)
	}
	switch {
	case req.auth != "":
		r.Header.Set("Authorization", req.auth)
	case req.token != "":
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	for k, vs := range req.header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	resp := response{status: rec.Code, header: rec.Header(), raw: rec.Body.Bytes()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", req.method, req.path, ct)
	}
	if err := json.Unmarshal(resp.raw, &resp.body); err != nil {
		t.Fatalf("%s %s: %d body %q: %v", req.method, req.path, rec.Code, resp.raw, err)
	}
	return resp
}

// must does req and fails the test unless it answers want.
func (e *env) must(t testing.TB, want int, req request) map[string]any {
	t.Helper()
	resp := e.do(t, req)
	if resp.status != want {
		t.Fatalf("%s %s: %d %s, want %d", req.method, req.path, resp.status, resp.raw, want)
	}
	return resp.body
}

// account is a tenant opened and logged in through the API.
type account struct {
	id, subDomain, token string
}

func (e *env) openAccount(t testing.TB, name, email string) account {
	t.Helper()
	body := e.must(t, http.StatusCreated, request{method: "POST", path: "/create_account",
		body: jsonBody(map[string]any{"client_name": name, "official_email": email, "password": "correct horse battery"})})
	a := account{id: body["client_id"].(string), subDomain: body["sub_domain"].(string)}
	a.token = e.login(t, a.id)
	return a
}

func (e *env) login(t testing.TB, clientID string) string {
	t.Helper()
	body := e.must(t, http.StatusOK, request{method: "POST", path: "/login",
		body: jsonBody(map[string]any{"client_id": clientID, "password": "correct horse battery"})})
	return body["token"].(string)
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
