package main_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
)

// TestPostgresOutage: tms serve reaches Postgres through a proxy that the
// test cuts mid-load. Admission lives in NATS, so creates and cancels go
// on being answered; /readyz stays 200 and says degraded (a load balancer
// keeps the process); a ticket made during the outage reads as accepted.
// Once Postgres is back every ticket lands, /readyz is ready again, and
// the history checker finds each 201 in the tenant database exactly once.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	began := time.Now()
	prefix := testkit.DatabasePrefix(t)
	pg, err := url.Parse(testkit.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := testkit.NewProxy(t, pg.Host)
	viaProxy := *pg
	viaProxy.Host = proxy.Addr()

	args := serveArgs(t, prefix)
	for i := range args {
		if args[i] == "--database-url" {
			args[i+1] = viaProxy.String()
		}
	}
	serve := startTMS(t, nil, args...)
	listening := serve.logEvent("listening")
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub := newAPI(t, str(t, listening, "public"))
	pub.waitReady(serve)
	if code, status := readyz(pub); code != http.StatusOK || status != "ready" {
		t.Fatalf("/readyz before the outage: %d %s", code, status)
	}
	clientID, token, _ := account(t, pub)
	addAgents(t, pub, token, clientID, 3)

	h := testkit.NewHistory()
	var clients []*testkit.Client
	for range 4 {
		clients = append(clients, h.NewClient(t, "http://"+str(t, listening, "public"), clientID, token, 5*time.Second))
	}
	load := startFaultLoad(t, h, clients, 1500)
	load.waitCreated(t, began, 30, 60*time.Second, "before the outage")

	const parking = "tenant database unreachable; parking its records"
	parkedBefore := serve.count(parking)
	cutAt := time.Now()
	proxy.Cut()
	// The readiness check keeps its answer for a second.
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, status := readyz(pub)
		return code == http.StatusOK && status == "degraded"
	}, "/readyz 200 degraded")
	_, body := pub.do(http.MethodGet, "/readyz", "", nil)
	t.Logf("/readyz during the outage: %v", body)
	// The outage is felt where it should be: the allocators fail to write
	// and redeliver with backoff (1 s, 2 s, ...), while admission goes on.
	// The allocators park the tenant's records (so that it holds up no
	// other tenant) until its database answers again.
	testkit.Eventually(t, 30*time.Second, func() bool { return serve.count(parking) > parkedBefore },
		"an allocator parking the tenant's records during the outage")
	load.waitCreated(t, cutAt, 100, 60*time.Second, "during the outage")
	// A ticket admitted during the outage: its record is in its slot's
	// key, its row cannot be written yet. GET answers from the record:
	// 200 accepted, also while Postgres is down.
	var during string
	for _, r := range h.Requests() {
		if r.Sent.After(cutAt) && r.First.Status == http.StatusCreated && r.First.Ticket != nil {
			during = r.First.Ticket.ID
		}
	}
	if code, got := pub.do(http.MethodGet, "/tickets/"+during, token, nil); code != http.StatusOK || got["status"] != "accepted" {
		t.Errorf("GET /tickets/%s during the outage = %d %v, want 200 accepted", during, code, got)
	}
	if code, status := readyz(pub); code != http.StatusOK || status != "degraded" {
		t.Errorf("/readyz late in the outage: %d %s", code, status)
	}

	restoredAt := time.Now()
	proxy.Restore()
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, status := readyz(pub)
		return code == http.StatusOK && status == "ready"
	}, "/readyz ready after the outage")
	readyAfter := time.Since(restoredAt)
	load.waitCreated(t, restoredAt, 20, 60*time.Second, "after the outage")
	load.stop()

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Resolve first: its retries (a cancel that met the outage) publish
	// events the allocators must apply before the check reads the rows.
	ctx := testkit.Context(t, 60*time.Second)
	resolved, left := h.Resolve(ctx)
	waitDrained(t, js, 60*time.Second)
	drainedAfter := time.Since(restoredAt)
	summary := h.Check(t, ctx, testkit.DatabaseURLs(prefix))
	t.Logf("before the outage: %s", load.phase(began, cutAt))
	t.Logf("during the outage (%s): %s", restoredAt.Sub(cutAt).Round(time.Millisecond), load.phase(cutAt, restoredAt))
	t.Logf("after the outage: %s", load.phase(restoredAt, time.Time{}))
	t.Logf("ready %s and drained %s after Postgres was back; resolved %d, left %d", readyAfter.Round(time.Millisecond),
		drainedAfter.Round(time.Millisecond), resolved, left)
	t.Logf("history: %s; allocator parking episodes %d", summary, serve.count(parking)-parkedBefore)
	if left != 0 {
		t.Errorf("%d requests still without a settling answer", left)
	}
	if during := load.phase(cutAt, restoredAt); during.unanswered != 0 {
		t.Errorf("%d creates during the outage got no answer or a 5xx: admission must not need Postgres", during.unanswered)
	}
	serve.stop()
	t.Logf("whole test %s", time.Since(began).Round(time.Millisecond))
}
