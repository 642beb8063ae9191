package main_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/ops/testkit"
)

// The read-your-writes run of issue 7: rywTenants tenants, rywAtOnce at a
// time, each changing its only agent and creating a ticket right after
// every change, which must see it. Each tenant goes through the
// unavailable/available change rywCycles times: on tms serve, where the
// responders' watch runs in the same process as the writes, one cycle
// seldom showed the stale answer the code before the fix gave; ten (840
// answers in all) did every time, at a cost of a few seconds.
const (
	rywTenants = 40
	rywAtOnce  = 8
	rywCycles  = 10
)

// TestReadYourAgentWritesServe: on tms serve, an agent change is seen by
// the tenant's very next create_ticket.
func TestReadYourAgentWritesServe(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	pub := newAPI(t, str(t, serve.logEvent("listening"), "public"))
	pub.waitReady(serve)

	readYourAgentWrites(t, pub)
	// The responders share this process's metrics.
	t.Logf("waits for the agents watch: %s", agentsWaits(t, pub))
	serve.stop()
}

// TestReadYourAgentWritesCluster is the same run on a 3-node NATS cluster
// with R3 buckets: one tms ingress and two tms workers, whose responders
// share the ETA requests, each with its own agents watch.
func TestReadYourAgentWritesCluster(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	c := testkit.StartCluster(t, 3) // returns once the cluster has a JetStream meta leader and every peer
	env := []string{"TMS_NATS_URL=" + c.URLs(), "TMS_DATABASE_URL=" + testkit.PostgresURL(),
		"TMS_REPLICAS=3", "TMS_LOG_FORMAT=json"}
	// One worker first, so the R3 streams and buckets are made once.
	w1 := startTMS(t, env, "worker")
	w1.logEvent("eta responder ready")
	w2 := startTMS(t, env, "worker")
	ingress := startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
		"--db-prefix", prefix)
	pub := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub.waitReady(ingress)
	w2.logEvent("eta responder ready")

	readYourAgentWrites(t, pub)
	ingress.stop()
	w1.stop()
	w2.stop()
}

// readYourAgentWrites runs every tenant's sequence, rywAtOnce at a time,
// and fails the test with every answer that did not see the change just
// made.
func readYourAgentWrites(t *testing.T, pub *api) {
	t.Helper()
	began := time.Now()
	suffix := testkit.RandomSuffix(6)
	var (
		mu     sync.Mutex
		misses []string
		wg     sync.WaitGroup
	)
	atOnce := make(chan struct{}, rywAtOnce)
	for i := range rywTenants {
		wg.Go(func() {
			atOnce <- struct{}{}
			defer func() { <-atOnce }()
			got := agentWritesOf(pub, fmt.Sprintf("ryw%d-%s", i, suffix))
			mu.Lock()
			misses = append(misses, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("%d tenants, %d at a time, %d answers checked each, in %s: %d misses", rywTenants, rywAtOnce,
		1+2*rywCycles, time.Since(began).Round(time.Millisecond), len(misses))
	if len(misses) > 0 {
		t.Errorf("%d answers did not see the tenant's agent change made just before:\n%s",
			len(misses), strings.Join(misses, "\n"))
	}
}

// agentWritesOf is one tenant's sequence: register its only agent -> GOLD
// 201 on it; then rywCycles times: make it unavailable -> BRONZE 409;
// available again -> GOLD 201 on it. It returns what went otherwise, one
// line each; it does not stop at a miss, so that a run counts them all.
func agentWritesOf(pub *api, name string) []string {
	var misses []string
	miss := func(step, format string, args ...any) {
		misses = append(misses, fmt.Sprintf("%s, %s: ", name, step)+fmt.Sprintf(format, args...))
	}
	call := func(step string, want int, method, path, token string, body any) (map[string]any, bool) {
		code, out, err := pub.try(method, path, token, nil, body)
		switch {
		case err != nil:
			miss(step, "%s %s: %v", method, path, err)
		case code != want:
			miss(step, "%s %s = %d %v, want %d", method, path, code, out, want)
		default:
			return out, true
		}
		return out, false
	}
	const password = "correct horse battery"
	acct, ok := call("setup", http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "RYW " + name, "official_email": name + "@ryw.example", "password": password})
	if !ok {
		return misses
	}
	clientID, _ := acct["client_id"].(string)
	login, ok := call("setup", http.StatusOK, http.MethodPost, "/login", "",
		map[string]any{"client_id": clientID, "password": password})
	if !ok {
		return misses
	}
	token, _ := login["token"].(string)
	ag, ok := call("setup", http.StatusCreated, http.MethodPost, "/agents", token,
		map[string]any{"client_id": clientID, "name": "Only"})
	if !ok {
		return misses
	}
	agent, _ := ag["agent_id"].(string)
	ticket := func(step, typ string, want int) {
		out, ok := call(step, want, http.MethodPost, "/create_ticket", token,
			map[string]any{"client_id": clientID, "ticket_type": typ})
		if ok && want == http.StatusCreated && out["agent_id"] != agent {
			miss(step, "%s ticket on agent %v, want %s", typ, out["agent_id"], agent)
		}
	}
	status := func(step, s string) bool {
		_, ok := call(step, http.StatusOK, http.MethodPatch, "/agents/"+agent, token, map[string]any{"agent_status": s})
		return ok
	}
	ticket("just registered", "GOLD", http.StatusCreated)
	for cycle := range rywCycles {
		if !status(fmt.Sprintf("cycle %d, setting unavailable", cycle), "unavailable") {
			return misses
		}
		ticket(fmt.Sprintf("cycle %d, just made unavailable", cycle), "BRONZE", http.StatusConflict)
		if !status(fmt.Sprintf("cycle %d, setting available", cycle), "available") {
			return misses
		}
		ticket(fmt.Sprintf("cycle %d, available again", cycle), "GOLD", http.StatusCreated)
	}
	return misses
}

var waitSeries = regexp.MustCompile(`(?m)^tms_eta_agents_wait_seconds_(count|sum)\{outcome="([a-z_]+)"\} (\S+)$`)

// agentsWaits sums up tms_eta_agents_wait_seconds from GET /metrics: per
// outcome, how many waits and how long they took in all.
func agentsWaits(t *testing.T, pub *api) string {
	t.Helper()
	code, out := pub.do(http.MethodGet, "/metrics", "", nil)
	raw, _ := out["raw"].(string)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	var parts []string
	for _, m := range waitSeries.FindAllStringSubmatch(raw, -1) {
		parts = append(parts, m[2]+" "+m[1]+" "+m[3])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
