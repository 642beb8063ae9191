package main_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// startupWait bounds how long a process may take to become ready once
// its cluster is up: a cluster that forms with clients already asking
// leaves some requests unanswered until their deadline, and CI is a
// loaded 2-core machine running -race.
const startupWait = 3 * time.Minute

// waitLog waits (up to startupWait) for a log line with message msg and
// fails if the process exits first.
func (p *proc) waitLog(msg string) {
	p.t.Helper()
	testkit.Eventually(p.t, startupWait, func() bool { return p.count(msg) > 0 || p.exited() }, "log line "+msg)
	if p.exited() {
		p.t.Fatalf("tms exited (%v) before logging %q; stderr: %s", p.err, msg, p.stderrText())
	}
}

// waitReadyLong is waitReady with startupWait.
func (a *api) waitReadyLong(p *proc) {
	a.t.Helper()
	testkit.Eventually(a.t, startupWait, func() bool {
		code, _ := readyz(a)
		return code == http.StatusOK || p.exited()
	}, "GET /readyz 200")
	if p.exited() {
		a.t.Fatalf("tms exited (%v) before ready; stderr: %s", p.err, p.stderrText())
	}
}

// TestStartWithTheCluster (issue 7, point 3) is `docker compose up`: two
// tms ingress and two tms worker with --replicas 3 start at the same
// moment as the 3-node NATS cluster they point at. They wait for it (and
// race each other creating the R3 buckets and streams) instead of
// exiting; all four become ready, and a ticket is admitted and lands in
// the tenant's database.
func TestStartWithTheCluster(t *testing.T) {
	t.Parallel()
	began := time.Now()
	prefix := testkit.DatabasePrefix(t)
	c := testkit.NewCluster(t, 3)
	env := []string{"TMS_NATS_URL=" + c.URLs(), "TMS_DATABASE_URL=" + testkit.PostgresURL(),
		"TMS_REPLICAS=3", "TMS_LOG_FORMAT=json"}
	var ingresses, workers []*proc
	for range 2 {
		ingresses = append(ingresses, startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0",
			"--internal-addr", "127.0.0.1:0", "--db-prefix", prefix))
		workers = append(workers, startTMS(t, env, "worker"))
	}
	formed := c.StartAll()
	if err := <-formed; err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Logf("cluster nodes accept clients %s after the tms processes started", time.Since(began).Round(time.Millisecond))

	var pubs []*api
	for _, p := range ingresses {
		pub := newAPI(t, str(t, p.logEvent("listening"), "public"))
		pub.waitReadyLong(p)
		pubs = append(pubs, pub)
	}
	for _, w := range workers {
		w.waitLog("eta responder ready")
	}
	t.Logf("all four ready %s after they started", time.Since(began).Round(time.Millisecond))
	waited := 0
	for _, p := range append(append([]*proc{}, ingresses...), workers...) {
		if p.exited() {
			t.Fatalf("a tms process exited: %v; stderr: %s", p.err, p.stderrText())
		}
		waited += p.count("waiting for NATS") + p.count("waiting for JetStream")
		p.mu.Lock()
		for _, l := range p.lines {
			if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "waiting for") || strings.HasSuffix(msg, " ready") {
				t.Logf("%s %s: %s attempt %v: %v", l["time"], p.cmd.Args[1], msg, l["attempt"], l["err"])
			}
		}
		p.mu.Unlock()
	}
	if waited == 0 {
		t.Errorf("no process logged a wait for NATS or JetStream: the test did not race the cluster")
	}
	t.Logf("attempts that waited, over the four processes: %d", waited)

	clientID, token, _ := account(t, pubs[0])
	ticket := map[string]any{"client_id": clientID, "ticket_type": "GOLD"}
	// Through the ingress that registered the agent: another ingress sees
	// an agent write only once its own agents watch has it (README,
	// read-your-writes), and that lag is not what this test is about.
	id := str(t, pubs[0].must(http.StatusCreated, http.MethodPost, "/create_ticket", token, ticket), "ticket_id")
	// Read in the tenant database itself: GET /tickets reads a stream
	// message that is still on its way to the replica it asks (R3 direct
	// gets may be stale) as not found.
	var dbName string
	if err := testkit.AdminConn(t).QueryRow(testkit.Context(t, 10*time.Second),
		`SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, prefix).Scan(&dbName); err != nil {
		t.Fatalf("tenant database: %v", err)
	}
	db := tenantDB(t, dbName)
	testkit.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE id = $1 AND status = 'allocated'`, id).Scan(&n)
		return err == nil && n == 1
	}, "ticket "+id+" allocated in "+dbName)
	pubs[0].must(http.StatusOK, http.MethodGet, "/tickets/"+id, token, nil)

	for _, p := range append(ingresses, workers...) {
		p.stop()
	}
}

// TestReadyzWhileJetStreamUnavailable: an ingress whose cluster has no
// JetStream quorum yet (one node of three) is up but not ready: /healthz
// 200, /readyz 503 saying it waits for JetStream, every other path 503
// with Retry-After. A worker waiting likewise stops cleanly on SIGTERM.
// Once the other nodes are up the ingress becomes ready by itself.
func TestReadyzWhileJetStreamUnavailable(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	c := testkit.NewCluster(t, 3)
	first := c.StartNodes(0)
	env := []string{"TMS_NATS_URL=" + c.URLs(), "TMS_DATABASE_URL=" + testkit.PostgresURL(),
		"TMS_REPLICAS=3", "TMS_LOG_FORMAT=json"}
	ingress := startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix)
	pub := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	ingress.logEvent("waiting for JetStream")

	code, body := pub.do(http.MethodGet, "/readyz", "", nil)
	msg, _ := body["message"].(string)
	if code != http.StatusServiceUnavailable || body["error"] != "not_ready" || !strings.Contains(msg, "waiting for JetStream") {
		t.Fatalf("/readyz while JetStream has no quorum: %d %v; want 503 not_ready saying it waits for JetStream", code, body)
	}
	t.Logf("/readyz: %s", msg)
	pub.must(http.StatusOK, http.MethodGet, "/healthz", "", nil)
	req, err := http.NewRequest(http.MethodPost, pub.base+"/create_account", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pub.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("POST /create_account while starting: %d Retry-After %q; want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	if err := <-first; err != nil {
		t.Fatalf("node n1: %v", err)
	}
	// A signal during the wait for JetStream is a clean stop.
	early := startTMS(t, env, "worker")
	early.logEvent("waiting for JetStream")
	early.stop()

	worker := startTMS(t, env, "worker")
	if err := <-c.StartNodes(1, 2); err != nil {
		t.Fatalf("nodes n2, n3: %v", err)
	}
	pub.waitReadyLong(ingress)
	worker.waitLog("eta responder ready")
	ingress.stop()
	worker.stop()
}

// TestSignalWhileWaitingForNATS: a process waiting for a NATS server that
// is not there yet keeps waiting (it does not give up after a few
// seconds), and SIGTERM stops it cleanly with exit 0.
func TestSignalWhileWaitingForNATS(t *testing.T) {
	t.Parallel()
	// The port stays ours, so no other test's server can take it, but
	// nothing speaking NATS answers there: each connection is dropped.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-accepted })
	url := "nats://" + ln.Addr().String()
	env := []string{"TMS_NATS_URL=" + url, "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	for _, args := range [][]string{
		{"worker"},
		{"ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0"},
	} {
		p := startTMS(t, env, args...)
		// Several attempts, over more than the old 10 s bound would allow
		// were the back-off not capped: it keeps trying.
		testkit.Eventually(t, time.Minute, func() bool { return p.count("waiting for NATS") >= 5 || p.exited() },
			"five attempts to reach NATS")
		if p.exited() {
			t.Fatalf("tms %s exited while NATS is not up: %v; stderr: %s", args[0], p.err, p.stderrText())
		}
		p.stop()
	}
}

// TestReadyzNamesTheResponders: an ingress with no tms worker on its NATS
// could admit nothing (every ticket would be a 503), so it is not ready,
// and /readyz names the responders; once a worker runs it is ready.
func TestReadyzNamesTheResponders(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	ns := testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	ingress := startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix)
	pub := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	var msg string
	testkit.Eventually(t, 60*time.Second, func() bool {
		code, body := pub.do(http.MethodGet, "/readyz", "", nil)
		msg, _ = body["message"].(string)
		return code == http.StatusServiceUnavailable && strings.Contains(msg, "eta responders: none is running") || ingress.exited()
	}, "/readyz 503 naming the responders")
	if ingress.exited() {
		t.Fatalf("ingress exited: %v; stderr: %s", ingress.err, ingress.stderrText())
	}
	t.Logf("/readyz without a worker: %s", msg)

	worker := startTMS(t, env, "worker")
	worker.logEvent("eta responder ready")
	pub.waitReady(ingress)
	clientID, token, _ := account(t, pub)
	pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token, map[string]any{"client_id": clientID, "ticket_type": "GOLD"})

	// And it says so again when the last worker is gone.
	worker.stop()
	testkit.Eventually(t, 30*time.Second, func() bool {
		code, body := pub.do(http.MethodGet, "/readyz", "", nil)
		msg, _ = body["message"].(string)
		return code == http.StatusServiceUnavailable && strings.Contains(msg, "eta responders")
	}, "/readyz 503 naming the responders after the worker stopped")
	ingress.stop()
}

// TestStartGivesUpOnConfigErrors: what no wait changes ends the start at
// once with one line: three replicas asked of a single server, refused
// credentials, a server without JetStream.
func TestStartGivesUpOnConfigErrors(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t)
	auth := testkit.StartNATSWith(t, testkit.NATSConfig{Username: "tms", Password: "right"})
	noJS := testkit.StartNATSWith(t, testkit.NATSConfig{NoJetStream: true})
	for _, tc := range []struct {
		name, url string
		extra     []string
		want      string
	}{
		{"replicas on one server", ns.URL(), []string{"TMS_REPLICAS=3"}, "--replicas"},
		{"credentials", strings.Replace(auth.URL(), "nats://", "nats://tms:hunter2@", 1), nil, "refused the credentials"},
		{"no JetStream", noJS.URL(), nil, "without JetStream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := append([]string{"TMS_NATS_URL=" + tc.url, "TMS_DATABASE_URL=" + testkit.PostgresURL()}, tc.extra...)
			p := startTMS(t, env, "worker")
			if code := p.exit(60 * time.Second); code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, p.stderrText())
			}
			lines := nonEmptyLines(p.stderrText())
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) || strings.Contains(lines[0], "hunter2") {
				t.Fatalf("stderr %q: want one line saying %q", p.stderrText(), tc.want)
			}
			t.Logf("stderr: %s", lines[0])
		})
	}
}
