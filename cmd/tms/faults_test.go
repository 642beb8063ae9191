package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// The fault tests of issue 4 through the binary: each runs concurrent
// creates and cancels through a testkit.History, injects its fault, lets
// it heal, resolves the requests that got no answer with their
// Idempotency-Keys, waits for the allocators to drain, and has the
// History check the tenant database. Processes are killed by the PID the
// test started them with, never by name.

// faultClients is how many goroutines drive each test's load.
const faultClients = 4

// faultTenant opens an account with agents available agents on pub and
// returns History clients of it, one per load goroutine.
func faultTenant(t *testing.T, h *testkit.History, pub *api, agents int) (clientID string, clients []*testkit.Client) {
	t.Helper()
	clientID, token, _ := account(t, pub)
	addAgents(t, pub, token, clientID, agents-1)
	for range faultClients {
		clients = append(clients, h.NewClient(t, pub.base, clientID, token, 10*time.Second))
	}
	return clientID, clients
}

// kill SIGKILLs a process the test started and waits for it to be gone.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !p.exited() {
		p.t.Fatalf("SIGKILL pid %d: %v", p.cmd.Process.Pid, err)
	}
	p.exit(30 * time.Second)
}

// signal sends sig to a process the test started.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s to pid %d: %v", sig, p.cmd.Process.Pid, err)
	}
}

// waitExited waits for a process to end by itself (a failpoint).
func (p *proc) waitExited(timeout time.Duration, what string) {
	p.t.Helper()
	testkit.Eventually(p.t, timeout, p.exited, what)
}

// natsJS connects the test to a NATS server for consumer and bucket
// inspection.
func natsJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// redeliveries is how many deliveries of the allocators' consumers were
// redeliveries: deliveries counted by each shard's consumer beyond the
// stream messages it handed out (one NATS server per test, every record of
// a shard's stream for its consumer).
func redeliveries(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n uint64
	for i := range subjects.DefaultSlotShards {
		c, err := js.Consumer(ctx, subjects.SlotStream(i), subjects.AllocatorConsumer(i))
		if err != nil {
			t.Fatalf("allocator consumer of shard %d: %v", i, err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatalf("allocator consumer info: %v", err)
		}
		if ci.Delivered.Consumer > ci.Delivered.Stream {
			n += ci.Delivered.Consumer - ci.Delivered.Stream
		}
	}
	return n
}

// settle is the end of every fault test: resolve the unanswered requests
// (the fault has healed), wait for the allocators to drain, and check the
// tenant databases against the history.
func settle(t *testing.T, h *testkit.History, js jetstream.JetStream, prefix string, resolveWithin time.Duration) testkit.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), resolveWithin)
	defer cancel()
	start := time.Now()
	resolved, left := h.Resolve(ctx)
	t.Logf("resolved %d unanswered requests in %s", resolved, time.Since(start).Round(time.Millisecond))
	if left > 0 {
		t.Errorf("%d requests still have no answer after %s", left, resolveWithin)
	}
	waitDrained(t, js, 60*time.Second)
	s := h.Check(t, testkit.Context(t, 60*time.Second), testkit.DatabaseURLs(prefix))
	t.Logf("history: %s", s)
	if s.Tickets == 0 {
		t.Errorf("no ticket was answered 201: the load did not run")
	}
	return s
}

// splitRoles starts tms ingress and two tms workers on a test NATS
// server; workerEnv[i] is extra environment of worker i.
func splitRoles(t *testing.T, prefix string, workerArgs []string, workerEnv ...[]string) (ns *testkit.NATS, pub *api, ingress *proc, workers []*proc) {
	t.Helper()
	ns = testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	for _, extra := range workerEnv {
		w := startTMS(t, append(append([]string{}, env...), extra...), append([]string{"worker"}, workerArgs...)...)
		workers = append(workers, w)
	}
	ingress = startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix)
	pub = newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub.waitReady(ingress)
	for _, w := range workers {
		w.logEvent("eta responder ready")
	}
	return ns, pub, ingress, workers
}

// TestFaultServeKilled: SIGKILL of the whole tms serve mid-load (embedded
// NATS, responders, allocators, ingress at once), then a restart on the
// same data dir. Every 201 from before the crash lands, and nothing else.
func TestFaultServeKilled(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	dataDir := t.TempDir()
	args := []string{"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", testkit.PostgresURL(),
		"--db-prefix", prefix, "--log-format", "json"}
	serve := startTMS(t, nil, args...)
	pub := newAPI(t, str(t, serve.logEvent("listening"), "public"))
	pub.waitReady(serve)
	h := testkit.NewHistory()
	_, clients := faultTenant(t, h, pub, 3)

	began := time.Now()
	load := startFaultLoad(t, h, clients, 400)
	load.waitCreated(t, began, 40, 60*time.Second, "before the crash")
	serve.kill()
	crashed := time.Now()
	load.stop()
	t.Logf("before the crash: %s", load.phase(began, crashed))

	serve = startTMS(t, nil, args...)
	pub = newAPI(t, str(t, serve.logEvent("listening"), "public"))
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub.waitReady(serve)
	restarted := time.Now()
	t.Logf("restarted and ready %s after the crash", restarted.Sub(crashed).Round(time.Millisecond))
	for _, c := range clients {
		c.SetBaseURL(pub.base)
	}
	load = startFaultLoad(t, h, clients, 120)
	load.waitCreated(t, restarted, 30, 60*time.Second, "after the restart")
	load.stop()
	t.Logf("after the restart: %s", load.phase(restarted, time.Time{}))

	settle(t, h, natsJS(t, natsURL), prefix, 60*time.Second)
	serve.stop()
}

// TestFaultWorkerKilled: one of two tms workers SIGKILLs itself before
// its Postgres commit (allocator.before_commit), then a replacement after
// its commit and before its ack (allocator.after_commit), while the other
// worker goes on. The messages they held are redelivered to the survivor
// after the ack wait and land exactly once.
func TestFaultWorkerKilled(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	workerArgs := []string{"--ack-wait", "2s"}
	ns, pub, _, workers := splitRoles(t, prefix, workerArgs,
		[]string{"TMS_FAILPOINT=allocator.before_commit:15"}, nil)
	js := natsJS(t, ns.URL())
	h := testkit.NewHistory()
	_, clients := faultTenant(t, h, pub, 3)

	began := time.Now()
	load := startFaultLoad(t, h, clients, 1000)
	workers[0].waitExited(60*time.Second, "the worker to die at allocator.before_commit")
	died := workers[0].logEvent("TEST FAILPOINT reached: killing this process with SIGKILL")
	t.Logf("worker killed before the commit of ticket %v", died["ticket"])

	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json",
		"TMS_FAILPOINT=allocator.after_commit:15"}
	second := startTMS(t, env, append([]string{"worker"}, workerArgs...)...)
	second.waitExited(60*time.Second, "the replacement worker to die at allocator.after_commit")
	died = second.logEvent("TEST FAILPOINT reached: killing this process with SIGKILL")
	t.Logf("worker killed after the commit of ticket %v", died["ticket"])

	after := time.Now()
	load.waitCreated(t, after, 20, 60*time.Second, "with the surviving worker alone")
	load.stop()
	t.Logf("load: %s", load.phase(began, time.Time{}))
	s := settle(t, h, js, prefix, 60*time.Second)
	n := redeliveries(t, js)
	t.Logf("allocator redeliveries: %d", n)
	if n == 0 {
		t.Errorf("no message was redelivered: the killed workers held none")
	}
	if s.Violations == 0 {
		workers[1].stop()
	}
}

// TestFaultWorkerPaused: a tms worker is stopped (SIGSTOP) past the ack
// wait while the other takes the redelivered messages, then continued: its
// late commits must not write a ticket twice, its late acks are harmless.
func TestFaultWorkerPaused(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	ns, pub, _, workers := splitRoles(t, prefix, []string{"--ack-wait", "2s"}, nil, nil)
	js := natsJS(t, ns.URL())
	h := testkit.NewHistory()
	_, clients := faultTenant(t, h, pub, 3)

	began := time.Now()
	load := startFaultLoad(t, h, clients, 800)
	load.waitCreated(t, began, 30, 60*time.Second, "before the pause")
	before := redeliveries(t, js)
	workers[0].signal(syscall.SIGSTOP)
	paused := time.Now()
	t.Cleanup(func() { _ = workers[0].cmd.Process.Signal(syscall.SIGCONT) })
	// The other worker goes on and takes over the messages the paused one
	// holds once their ack wait has passed.
	testkit.Eventually(t, 30*time.Second, func() bool {
		return redeliveries(t, js) > before && load.phase(paused, time.Time{}).created >= 5
	}, "redeliveries and admissions while a worker is paused")
	workers[0].signal(syscall.SIGCONT)
	t.Logf("worker paused for %s; redeliveries %d -> %d", time.Since(paused).Round(time.Millisecond), before, redeliveries(t, js))
	resumed := time.Now()
	load.waitCreated(t, resumed, 20, 60*time.Second, "after the pause")
	load.stop()
	t.Logf("load: %s", load.phase(began, time.Time{}))
	if s := settle(t, h, js, prefix, 60*time.Second); s.Violations == 0 {
		for _, w := range workers {
			w.stop()
		}
	}
}

// TestFaultCrashAfterReserve: tms ingress SIGKILLs itself after the
// responder wrote a ticket's confirmed record (the admission's one durable
// write) and before the 201 (ingress.after_reserve). The ticket is
// accepted and its client cut off. The restarted ingress, asked again with
// the same Idempotency-Key, takes the dead request's key over and answers
// that very ticket (found by the nonce the key's pending record fixed):
// one ticket for the request, none lost and none extra, and every
// confirmed record ends a live ticket's, one each (the history checker
// also finds no row no client asked for).
func TestFaultCrashAfterReserve(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	ns := testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	worker := startTMS(t, env, "worker")
	ingressArgs := []string{"ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix}
	ingress := startTMS(t, append(append([]string{}, env...), "TMS_FAILPOINT=ingress.after_reserve:25"), ingressArgs...)
	pub := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub.waitReady(ingress)
	worker.logEvent("eta responder ready")
	js := natsJS(t, ns.URL())
	h := testkit.NewHistory()
	clientID, clients := faultTenant(t, h, pub, 2)
	slots := slotBucket(t, js, clientID)

	began := time.Now()
	load := startFaultLoad(t, h, clients, 200)
	ingress.waitExited(60*time.Second, "the ingress to die at ingress.after_reserve")
	orphan := str(t, ingress.logEvent("TEST FAILPOINT reached: killing this process with SIGKILL"), "ticket")
	load.stop()
	t.Logf("ingress died before answering ticket %s; load: %s", orphan, load.phase(began, time.Time{}))
	if keys := reservationsOf(t, slots, clientID)[orphan]; len(keys) != 1 {
		t.Fatalf("ticket %s holds confirmed records %v right after the crash, want one: its write came before the crash", orphan, keys)
	}

	ingress = startTMS(t, env, ingressArgs...)
	pub = newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub.waitReady(ingress)
	for _, c := range clients {
		c.SetBaseURL(pub.base)
	}
	// The dead request's key is taken over once its claim is old enough
	// (the ingress's takeover bound, about 31 s after the claim).
	s := settle(t, h, js, prefix, 90*time.Second)
	if s.Unanswered == 0 {
		t.Errorf("no request went unanswered: the crash cut none off")
	}
	var found bool
	for _, r := range h.Requests() {
		if r.Final.Ticket != nil && r.Final.Ticket.ID == orphan {
			found = true
			t.Logf("the request cut off by the crash (key %s) got ticket %s on retry %d", r.Key, orphan, r.Retries)
		}
	}
	if !found {
		t.Errorf("no retry got ticket %s, the one the crash cut off", orphan)
	}
	// Every confirmed record is a live ticket's, one each.
	live := liveTickets(t, prefix+clientID)
	held := reservationsOf(t, slots, clientID)
	if len(held) != len(live) {
		t.Errorf("%d tickets hold confirmed records, %d are live in the tenant database", len(held), len(live))
	}
	for id, ks := range held {
		if len(ks) != 1 || !live[id] {
			t.Errorf("ticket %s: confirmed records %v, live in the database %v", id, ks, live[id])
		}
	}
	ingress.stop()
	worker.stop()
}

// slotBucket opens the slot shard bucket of tenant.
func slotBucket(t *testing.T, js jetstream.JetStream, tenant string) jetstream.KeyValue {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	var kv jetstream.KeyValue
	testkit.Eventually(t, 10*time.Second, func() bool {
		var err error
		kv, err = js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards)))
		return err == nil
	}, "the tenant's slot bucket")
	return kv
}

// reservationsOf maps each ticket whose confirmed record is the newest of
// a slot key of tenant to those keys.
func reservationsOf(t *testing.T, kv jetstream.KeyValue, tenant string) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string][]string{}
	lister, err := kv.ListKeysFiltered(ctx, subjects.TenantSlots(tenant))
	if err != nil {
		t.Fatalf("listing slot keys: %v", err)
	}
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("reading slot key %s: %v", key, err)
		}
		var rec subjects.SlotRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatalf("slot record %s: %v", key, err)
		}
		if rec.State == subjects.SlotConfirmed && rec.Ticket != "" {
			out[rec.Ticket] = append(out[rec.Ticket], key)
		}
	}
	return out
}

// liveTickets is the set of tickets of a tenant database not cancelled.
func liveTickets(t *testing.T, db string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := testkit.ReadTicketRows(ctx, testkit.DatabaseURLs("")(db))
	if err != nil {
		t.Fatalf("reading tickets of %s: %v", db, err)
	}
	live := map[string]bool{}
	for _, r := range rows {
		if r.Status != "cancelled" {
			live[r.ID] = true
		}
	}
	return live
}
