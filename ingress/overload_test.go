package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/subjects"
)

// newOverload builds the limits for a test env from the env's own
// JetStream and metrics registry.
func newOverload(t testing.TB, c *Config, oc OverloadConfig) *Overload {
	t.Helper()
	oc.JS, oc.Metrics, oc.Logger = c.JS, c.Metrics, c.Logger
	o, err := NewOverload(oc)
	if err != nil {
		t.Fatalf("NewOverload: %v", err)
	}
	return o
}

// natsRequest sends one NATS API request and returns the raw reply, with
// its headers.
func (e *ticketEnv) natsRequest(t testing.TB, tenant, op string, body any) (*nats.Msg, map[string]any) {
	t.Helper()
	msg := &nats.Msg{Subject: subjects.API(tenant, op), Data: []byte(jsonBody(body))}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := e.client.RequestMsgWithContext(ctx, msg)
	if err != nil {
		t.Fatalf("NATS %s: %v", msg.Subject, err)
	}
	var out map[string]any
	if err := json.Unmarshal(reply.Data, &out); err != nil {
		t.Fatalf("NATS %s: reply %q: %v", msg.Subject, reply.Data, err)
	}
	return reply, out
}

// counterValue reads one labelled counter from g (0 when absent).
func counterValue(t testing.TB, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// wantRefused checks an HTTP refusal: status, error code and Retry-After.
func wantRefused(t testing.TB, what string, resp response, status int, code, retryAfter string) {
	t.Helper()
	if resp.status != status || resp.body["status"] != "error" || resp.body["error"] != code {
		t.Fatalf("%s: %d %s, want %d %s", what, resp.status, resp.raw, status, code)
	}
	if got := resp.header.Get("Retry-After"); got != retryAfter {
		t.Fatalf("%s: Retry-After %q, want %q", what, got, retryAfter)
	}
}

// wantNATSRefused is wantRefused for a NATS API reply.
func wantNATSRefused(t testing.TB, what string, reply *nats.Msg, body map[string]any, status int, code, retryAfter string) {
	t.Helper()
	if body["code"] != float64(status) || body["status"] != "error" || body["error"] != code {
		t.Fatalf("%s: %s, want code %d %s", what, reply.Data, status, code)
	}
	if got := reply.Header.Get("Retry-After"); got != retryAfter {
		t.Fatalf("%s: Retry-After header %q, want %q", what, got, retryAfter)
	}
}

// A tenant driven far over its rate gets 429s with Retry-After from its
// own bucket, on HTTP and NATS alike, while two other tenants sending at
// the same time are served every time. The limiter's clock is frozen, so
// exactly a burst of the noisy tenant's requests gets through.
func TestNoisyTenantIsRateLimitedOthersAreServed(t *testing.T) {
	t.Parallel()
	const burst = 20
	limClock := testkit.NewClock(time.Now())
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		c.Overload = newOverload(t, c, OverloadConfig{TenantRate: 1, TenantBurst: burst, Now: limClock.Now})
	}})
	noisy, _ := e.tenantWithAgent(t, "Noisy", "noisy@example.com")
	quiet1, _ := e.tenantWithAgent(t, "Quiet One", "quiet1@example.com")
	quiet2, _ := e.tenantWithAgent(t, "Quiet Two", "quiet2@example.com")
	for _, a := range []account{noisy, quiet1, quiet2} {
		// Like createWhenReady, with a full bucket for every try.
		testkit.Eventually(t, 10*time.Second, func() bool {
			limClock.Advance(time.Hour)
			r := e.create(t, a, subjects.Gold, nil)
			if r.status != http.StatusCreated && r.status != http.StatusConflict {
				t.Fatalf("create_ticket: %d %s", r.status, r.raw)
			}
			return r.status == http.StatusCreated
		}, "the responder to see the tenant's agent")
	}
	limClock.Advance(time.Hour) // every bucket full

	type result struct {
		tenant string
		resp   response
	}
	results := make(chan result, 400)
	var wg sync.WaitGroup
	send := func(a account, goroutines, each int) {
		for range goroutines {
			wg.Go(func() {
				for range each {
					results <- result{a.id, e.create(t, a, subjects.Gold, nil)}
				}
			})
		}
	}
	send(noisy, 6, 50) // 300: fifteen times its burst
	send(quiet1, 2, 8) // 16 each: inside their bursts
	send(quiet2, 2, 8)
	wg.Wait()
	close(results)

	served := map[string]int{}
	limited := 0
	for r := range results {
		switch {
		case r.resp.status == http.StatusCreated || r.resp.status == http.StatusConflict:
			served[r.tenant]++
		case r.tenant == noisy.id && r.resp.status == http.StatusTooManyRequests:
			wantRefused(t, "noisy create_ticket", r.resp, http.StatusTooManyRequests, codeRateLimited, "1")
			limited++
		default:
			t.Fatalf("tenant %s: create_ticket %d %s", r.tenant, r.resp.status, r.resp.raw)
		}
	}
	if served[noisy.id] != burst || limited != 300-burst {
		t.Fatalf("noisy tenant: %d served, %d limited; want %d and %d", served[noisy.id], limited, burst, 300-burst)
	}
	if served[quiet1.id] != 16 || served[quiet2.id] != 16 {
		t.Fatalf("quiet tenants served %d and %d of 16", served[quiet1.id], served[quiet2.id])
	}
	if got := counterValue(t, e.metrics, "tms_ingress_rate_limited_total", "limit", "tenant"); got != 300-burst {
		t.Fatalf("tms_ingress_rate_limited_total{limit=tenant} = %v, want %d", got, 300-burst)
	}

	// The NATS API draws on the same bucket per subject tenant.
	reply, body := e.natsRequest(t, noisy.id, subjects.OpCreateTicket,
		map[string]string{"client_id": noisy.id, "ticket_type": subjects.Gold})
	wantNATSRefused(t, "noisy NATS create_ticket", reply, body, http.StatusTooManyRequests, codeRateLimited, "1")
	_, body = e.natsRequest(t, quiet1.id, subjects.OpCreateTicket,
		map[string]string{"client_id": quiet1.id, "ticket_type": subjects.Gold})
	if body["code"] != float64(http.StatusCreated) {
		t.Fatalf("quiet NATS create_ticket: %v", body)
	}
	// Every authenticated route pays, reads too.
	wantRefused(t, "noisy GET /agents", e.do(t, request{method: "GET", path: "/agents", token: noisy.token}),
		http.StatusTooManyRequests, codeRateLimited, "1")

	// One second refills one token: one more request, not two.
	limClock.Advance(time.Second)
	if resp := e.create(t, noisy, subjects.Gold, nil); resp.status != http.StatusCreated {
		t.Fatalf("noisy create_ticket after a refill: %d %s", resp.status, resp.raw)
	}
	wantRefused(t, "noisy create_ticket after its refill", e.create(t, noisy, subjects.Gold, nil),
		http.StatusTooManyRequests, codeRateLimited, "1")
}

// blockingResponder answers the tenant's ETA requests itself: each one
// is announced on arrived and held until release is closed, then refused
// with 409 (no slot). It is a real NATS peer on the real subject.
type blockingResponder struct {
	arrived chan string
	release chan struct{}
}

func newBlockingResponder(t testing.TB, e *ticketEnv, tenant string) *blockingResponder {
	t.Helper()
	b := &blockingResponder{arrived: make(chan string, 16), release: make(chan struct{})}
	nc := e.nats.Connect(t)
	sub, err := nc.Subscribe(subjects.ETA(tenant), func(m *nats.Msg) {
		var req subjects.ETARequest
		_ = json.Unmarshal(m.Data, &req)
		select {
		case b.arrived <- req.Op:
		default:
		}
		<-b.release
		data, _ := json.Marshal(subjects.ETARefusal(subjects.ETACodeNoSlot, "", "none"))
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() {
		b.unblock()
		_ = sub.Unsubscribe()
	})
	return b
}

func (b *blockingResponder) unblock() {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

func (b *blockingResponder) waitArrived(t testing.TB) {
	t.Helper()
	select {
	case <-b.arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("no ETA request reached the test's responder")
	}
}

// With every admission place taken (MaxInFlight 1, held by a create whose
// ETA request the test's responder sits on), admissions over HTTP and
// NATS are answered 503 overloaded with Retry-After at once, not queued;
// GET is not admission and still answers. When the held request ends,
// admission works again.
func TestInFlightLimitShedsAdmission(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true,
		etaTimeout: time.Minute, // the held request must outlast the test's checks
		configure: func(c *Config) {
			c.Overload = newOverload(t, c, OverloadConfig{MaxInFlight: 1})
		}})
	a := e.openAccount(t, "Busy", "busy@example.com")
	resp := newBlockingResponder(t, e, a.id)

	held := make(chan response, 1)
	go func() { held <- e.create(t, a, subjects.Gold, nil) }()
	resp.waitArrived(t)

	wantRefused(t, "create_ticket", e.create(t, a, subjects.Silver, nil),
		http.StatusServiceUnavailable, codeOverloaded, "1")
	wantRefused(t, "cancel_ticket", e.do(t, request{method: "POST", path: "/cancel_ticket", token: a.token,
		body: jsonBody(map[string]string{"ticket_id": "tnosuchticket"})}),
		http.StatusServiceUnavailable, codeOverloaded, "1")
	wantRefused(t, "validate_eta", doOn(t, e.internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})}),
		http.StatusServiceUnavailable, codeOverloaded, "1")
	wantRefused(t, "allocate_slot", doOn(t, e.internal, request{method: "POST", path: "/allocate_slot",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold,
			"slot_id": subjects.FormatSlotID("agent1", time.Now().Truncate(time.Minute), "abcdefghijkl")})}),
		http.StatusServiceUnavailable, codeOverloaded, "1")
	reply, body := e.natsRequest(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})
	wantNATSRefused(t, "NATS create_ticket", reply, body, http.StatusServiceUnavailable, codeOverloaded, "1")
	reply, body = e.natsRequest(t, a.id, subjects.OpCancelTicket, map[string]string{"ticket_id": "tnosuchticket"})
	wantNATSRefused(t, "NATS cancel_ticket", reply, body, http.StatusServiceUnavailable, codeOverloaded, "1")

	// Not admission: answered as usual.
	if r := e.do(t, request{method: "GET", path: "/tickets/tnosuchticket", token: a.token}); r.status != http.StatusNotFound {
		t.Fatalf("GET /tickets while saturated: %d %s", r.status, r.raw)
	}
	// A bad request is refused for what it is, not shed.
	if r := e.create(t, a, "PLATINUM", nil); r.status != http.StatusBadRequest {
		t.Fatalf("bad create_ticket while saturated: %d %s", r.status, r.raw)
	}
	if got := counterValue(t, e.metrics, "tms_ingress_shed_total", "reason", shedInFlight); got != 6 {
		t.Fatalf("tms_ingress_shed_total{reason=in_flight} = %v, want 6", got)
	}

	resp.unblock()
	if r := <-held; r.status != http.StatusConflict {
		t.Fatalf("the held create_ticket: %d %s", r.status, r.raw)
	}
	if r := e.create(t, a, subjects.Gold, nil); r.status != http.StatusConflict {
		t.Fatalf("create_ticket once the place is free: %d %s", r.status, r.raw)
	}
}

// With no allocator reading the slot records, new admissions stop at
// MaxBacklog records with 503 and Retry-After, on HTTP and NATS; cancel
// and GET go on. The bound is the slot streams' real count, not only what
// this process had written, and shedding ends once the allocators catch
// up.
func TestBacklogShedsNewAdmissions(t *testing.T) {
	t.Parallel()
	const maxBacklog = 3
	sampleClock := testkit.NewClock(time.Now())
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		c.Overload = newOverload(t, c, OverloadConfig{MaxBacklog: maxBacklog, Now: sampleClock.Now})
	}})
	a, _ := e.tenantWithAgent(t, "Backlogged", "backlog@example.com")
	first := e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)
	var second string
	for i := 1; i < maxBacklog; i++ {
		r := e.create(t, a, subjects.Gold, nil)
		if r.status != http.StatusCreated {
			t.Fatalf("create_ticket %d of %d: %d %s", i+1, maxBacklog, r.status, r.raw)
		}
		second = r.body["ticket_id"].(string)
	}

	wantRefused(t, "create_ticket over the backlog", e.create(t, a, subjects.Gold, nil),
		http.StatusServiceUnavailable, codeOverloaded, "5")
	wantRefused(t, "validate_eta over the backlog", doOn(t, e.internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})}),
		http.StatusServiceUnavailable, codeOverloaded, "5")
	reply, body := e.natsRequest(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})
	wantNATSRefused(t, "NATS create_ticket over the backlog", reply, body, http.StatusServiceUnavailable, codeOverloaded, "5")

	// A fresh sample reads the streams themselves: still full.
	sampleClock.Advance(time.Second)
	wantRefused(t, "create_ticket after a fresh sample", e.create(t, a, subjects.Silver, nil),
		http.StatusServiceUnavailable, codeOverloaded, "5")
	if n := e.slotRecords(t, a.id); n != maxBacklog {
		t.Fatalf("%d slot records, want %d: a refused admission wrote", n, maxBacklog)
	}

	// Cancel and GET still work.
	if r := e.cancel(t, a, first); r.status != http.StatusOK {
		t.Fatalf("cancel_ticket over the backlog: %d %s", r.status, r.raw)
	}
	if r := e.getTicket(t, a, second); r.status != http.StatusOK || r.body["status"] != subjects.StatusAccepted {
		t.Fatalf("GET /tickets over the backlog: %d %s", r.status, r.raw)
	}
	if got := counterValue(t, e.metrics, "tms_ingress_shed_total", "reason", shedBacklog); got != 4 {
		t.Fatalf("tms_ingress_shed_total{reason=backlog} = %v, want 4", got)
	}

	// The allocators catch up; the next sample lets admissions in again.
	e.startAllocator(t)
	testkit.Eventually(t, 30*time.Second, func() bool {
		sampleClock.Advance(time.Second)
		r := e.create(t, a, subjects.Gold, nil)
		switch r.status {
		case http.StatusCreated:
			return true
		case http.StatusServiceUnavailable:
			return false
		}
		t.Fatalf("create_ticket while the allocator catches up: %d %s", r.status, r.raw)
		return false
	}, "admission to resume once the allocator catches up")
}

// loginFrom posts a login from a client address to h.
func loginFrom(h http.Handler, addr, clientID, password string) *httptest.ResponseRecorder {
	body := map[string]string{"client_id": clientID, "password": password}
	if password == "" {
		delete(body, "password") // malformed: 400
	}
	r := httptest.NewRequest("POST", "/login", strings.NewReader(jsonBody(body)))
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = addr
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func wantStatus(t testing.TB, what string, w *httptest.ResponseRecorder, status int, retryAfter string) {
	t.Helper()
	if w.Code != status || w.Header().Get("Retry-After") != retryAfter {
		t.Fatalf("%s: %d (Retry-After %q) %s, want %d (Retry-After %q)", what, w.Code, w.Header().Get("Retry-After"), w.Body, status, retryAfter)
	}
	if status == http.StatusTooManyRequests && !strings.Contains(w.Body.String(), `"error":"rate_limited"`) {
		t.Fatalf("%s: %s, want rate_limited", what, w.Body)
	}
}

// Failed logins (wrong password, unknown client, malformed body) are
// counted per client address and per client_id: with MaxFailures 6 a key
// may fail twice freely, then once a second, and is locked out at the
// sixth. Successes cost nothing. A client_id locked out by guessers
// elsewhere still logs in from the address it logged in from before.
// The limiter's clock is a test clock.
func TestLoginFailuresSlowThenLockOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	victim := e.openAccount(t, "Victim", "victim@example.com").id
	bystander := e.openAccount(t, "Bystander", "bystander@example.com").id
	clock := testkit.NewClock(time.Now())
	cfg := e.config(func(context.Context) error { return nil })
	cfg.Overload = newOverload(t, &cfg, OverloadConfig{MaxFailures: 6, Lockout: time.Minute, Now: clock.Now})
	e.withAdmission(&cfg, admission.Config{})
	h, err := NewPublic(cfg)
	if err != nil {
		t.Fatalf("NewPublic: %v", err)
	}
	const good = "correct horse battery"
	const home, guesser = "198.51.100.7:4000", "203.0.113.9:5000"

	// The tenant logs in from home: that address is its own from now on.
	wantStatus(t, "victim from home", loginFrom(h, home, victim, good), http.StatusOK, "")

	// Per address: a malformed body and an unknown client are failures.
	wantStatus(t, "malformed", loginFrom(h, guesser, victim, ""), http.StatusBadRequest, "")
	wantStatus(t, "unknown client", loginFrom(h, guesser, "nosuchclient", good), http.StatusUnauthorized, "")
	// Slowed: even a correct password waits its second (another port of
	// the address is the same client).
	wantStatus(t, "third try at once", loginFrom(h, "203.0.113.9:5001", bystander, good), http.StatusTooManyRequests, "1")
	clock.Advance(time.Second)
	wantStatus(t, "after a second, correct", loginFrom(h, guesser, bystander, good), http.StatusOK, "")
	for i := range 4 {
		clock.Advance(time.Second)
		wantStatus(t, fmt.Sprintf("slowed failure %d", i+3), loginFrom(h, guesser, fmt.Sprintf("nosuch%d", i), good), http.StatusUnauthorized, "")
	}
	wantStatus(t, "locked-out address", loginFrom(h, guesser, bystander, good), http.StatusTooManyRequests, "60")
	wantStatus(t, "another address", loginFrom(h, "[2001:db8::1]:4000", bystander, good), http.StatusOK, "")

	// Per client_id: guessers on six addresses, one try each, a second
	// apart once the client_id is slowed.
	for i := range 6 {
		addr := fmt.Sprintf("192.0.2.%d:1000", i+1)
		if i == 2 {
			wantStatus(t, "third guess at once", loginFrom(h, addr, victim, "wrong password"), http.StatusTooManyRequests, "1")
		}
		clock.Advance(time.Second)
		wantStatus(t, fmt.Sprintf("guess %d", i+1), loginFrom(h, addr, victim, "wrong password"), http.StatusUnauthorized, "")
	}
	wantStatus(t, "locked-out client_id from a new address", loginFrom(h, "192.0.2.99:1000", victim, good), http.StatusTooManyRequests, "60")
	wantStatus(t, "locked-out client_id from home", loginFrom(h, home, victim, good), http.StatusOK, "")
	// Successes are not capped.
	for i := range 10 {
		wantStatus(t, fmt.Sprintf("login %d from home", i+1), loginFrom(h, home, victim, good), http.StatusOK, "")
	}

	for limit, want := range map[string]float64{limitFailuresAddr: 2, limitFailuresClient: 2} {
		if got := counterValue(t, e.metrics, "tms_ingress_rate_limited_total", "limit", limit); got != want {
			t.Errorf("tms_ingress_rate_limited_total{limit=%s} = %v, want %v", limit, got, want)
		}
	}
}

// create_account is limited per client address by a token bucket, which
// every attempt pays.
func TestAccountCreationRateIsPerAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	clock := testkit.NewClock(time.Now())
	cfg := e.config(func(context.Context) error { return nil })
	cfg.Overload = newOverload(t, &cfg, OverloadConfig{ClientRate: 1, ClientBurst: 2, Now: clock.Now})
	e.withAdmission(&cfg, admission.Config{})
	h, err := NewPublic(cfg)
	if err != nil {
		t.Fatalf("NewPublic: %v", err)
	}
	create := func(addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/create_account", strings.NewReader(`{"client_name":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 2 {
		wantStatus(t, fmt.Sprintf("create %d", i+1), create("198.51.100.7:4000"), http.StatusBadRequest, "")
	}
	wantStatus(t, "third create", create("198.51.100.7:4001"), http.StatusTooManyRequests, "1")
	wantStatus(t, "another address", create("198.51.100.8:4000"), http.StatusBadRequest, "")
	clock.Advance(time.Second)
	wantStatus(t, "after a token refilled", create("198.51.100.7:4000"), http.StatusBadRequest, "")
	if got := counterValue(t, e.metrics, "tms_ingress_rate_limited_total", "limit", limitClientIP); got != 1 {
		t.Fatalf("tms_ingress_rate_limited_total{limit=client_ip} = %v, want 1", got)
	}
}

// A create_account that finds every place taken waits for one and is
// served when it frees; one that waits longer than QueueWait gets 503
// overloaded with Retry-After.
func TestAccountCreatesWaitForAPlace(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	run := func(wait time.Duration) (*api, http.Handler, chan struct{}, chan struct{}) {
		o, err := NewOverload(OverloadConfig{MaxAccountCreates: 1, QueueWait: wait, MaxBacklog: -1, Metrics: reg})
		if err != nil {
			t.Fatalf("NewOverload: %v", err)
		}
		a := &api{overload: o, logger: testkit.Logger(t)}
		entered, release := make(chan struct{}), make(chan struct{})
		h := a.limitUnauthenticated(o.creates, shedAccountCreates)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-release
			writeJSON(w, http.StatusCreated, statusBody{Status: "created"})
		}))
		return a, h, entered, release
	}
	call := func(h http.Handler) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/create_account", nil))
		return w
	}

	// Waits its turn.
	a, h, entered, release := run(time.Minute)
	first, second := make(chan *httptest.ResponseRecorder), make(chan *httptest.ResponseRecorder)
	go func() { first <- call(h) }()
	<-entered
	go func() { second <- call(h) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return a.overload.creates.waiting.Load() == 1 }, "the second create_account to wait")
	release <- struct{}{}
	if w := <-first; w.Code != http.StatusCreated {
		t.Fatalf("first create_account: %d", w.Code)
	}
	<-entered // the waiter got the place
	release <- struct{}{}
	if w := <-second; w.Code != http.StatusCreated {
		t.Fatalf("the create_account that waited: %d %s", w.Code, w.Body)
	}

	// Waits too long.
	_, h, entered, release = run(10 * time.Millisecond)
	go func() { first <- call(h) }()
	<-entered
	w := call(h)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" ||
		!strings.Contains(w.Body.String(), `"error":"overloaded"`) {
		t.Fatalf("create_account after its wait: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	release <- struct{}{}
	<-first
	if got := counterValue(t, reg, "tms_ingress_shed_total", "reason", shedAccountCreates); got != 1 {
		t.Fatalf("tms_ingress_shed_total{reason=account_creates} = %v, want 1", got)
	}
}

// A NATS API request that finds every handler busy is answered 503 at
// once, not left in the subscription's buffer until its caller times out.
func TestNATSAPIShedsWhenEveryHandlerIsBusy(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: time.Minute, configure: func(c *Config) {
		c.NATSConcurrency = 1
	}})
	a := e.openAccount(t, "Busy NATS", "busynats@example.com")
	resp := newBlockingResponder(t, e, a.id)

	held := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		reply, err := e.client.RequestWithContext(ctx, subjects.API(a.id, subjects.OpCreateTicket),
			[]byte(jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})))
		if err == nil && !strings.Contains(string(reply.Data), `"code":409`) {
			err = errors.New("held create_ticket answered " + string(reply.Data))
		}
		held <- err
	}()
	resp.waitArrived(t)

	reply, body := e.natsRequest(t, a.id, subjects.OpGetTicket, map[string]string{"ticket_id": "tnosuchticket"})
	wantNATSRefused(t, "NATS get_ticket with the one handler busy", reply, body,
		http.StatusServiceUnavailable, codeOverloaded, "1")
	if got := counterValue(t, e.metrics, "tms_ingress_shed_total", "reason", shedNATSHandlers); got != 1 {
		t.Fatalf("tms_ingress_shed_total{reason=nats_handlers} = %v, want 1", got)
	}

	resp.unblock()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	// The handler frees its place just after its reply goes out.
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, body := e.natsRequest(t, a.id, subjects.OpGetTicket, map[string]string{"ticket_id": "tnosuchticket"})
		if c := body["code"]; c != float64(http.StatusNotFound) && c != float64(http.StatusServiceUnavailable) {
			t.Fatalf("NATS get_ticket once the handler is free: %v", body)
		}
		return body["code"] == float64(http.StatusNotFound)
	}, "the NATS API to answer again once its handler is free")
}

// The fair share is one limiter for HTTP and the NATS API: once the
// process is saturated with a noisy tenant far over its share, that
// tenant's create_ticket gets 429 rate_limited with Retry-After 1 on
// both (over NATS before it takes a handler), while a quiet tenant's is
// admitted. The limiter's clock is a test
// clock, and the saturated interval is made by holding admission places
// directly.
func TestFairShareIsSharedByHTTPAndNATS(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now())
	var o *Overload
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		o = newOverload(t, c, OverloadConfig{SoftInFlight: -1, Now: clock.Now})
		c.Overload = o
	}})
	noisy, _ := e.tenantWithAgent(t, "Noisy Fair", "noisyfair@example.com")
	quiet, _ := e.tenantWithAgent(t, "Quiet Fair", "quietfair@example.com")
	e.createWhenReady(t, quiet, subjects.Gold)

	saturateFairShare(t, o, clock, noisy, quiet)

	wantRefused(t, "noisy create_ticket over HTTP", e.create(t, noisy, subjects.Gold, nil),
		http.StatusTooManyRequests, codeRateLimited, "1")
	reply, body := e.natsRequest(t, noisy.id, subjects.OpCreateTicket, map[string]string{"client_id": noisy.id, "ticket_type": subjects.Gold})
	wantNATSRefused(t, "noisy create_ticket over NATS", reply, body, http.StatusTooManyRequests, codeRateLimited, "1")
	if msg, _ := body["message"].(string); !strings.Contains(msg, "fair share") {
		t.Fatalf("the 429 does not say why: %q", msg)
	}
	if r := e.create(t, quiet, subjects.Gold, nil); r.status != http.StatusCreated {
		t.Fatalf("quiet create_ticket over HTTP: %d %s", r.status, r.raw)
	}
	if _, body := e.natsRequest(t, quiet.id, subjects.OpCreateTicket, map[string]string{"client_id": quiet.id, "ticket_type": subjects.Gold}); body["code"] != float64(http.StatusCreated) {
		t.Fatalf("quiet create_ticket over NATS: %v", body)
	}
	if got := counterValue(t, e.metrics, "tms_ingress_rate_limited_total", "limit", limitFairShare); got != 2 {
		t.Fatalf("tms_ingress_rate_limited_total{limit=fair_share} = %v, want 2", got)
	}
	// The NATS API asks before a request takes a handler, so the tenant
	// being shed does not hold the handlers the others need.
	if err := o.checkShareNATS(subjects.API(noisy.id, subjects.OpGetTicket)); err == nil || toAPIError(err).status != http.StatusTooManyRequests {
		t.Fatalf("checkShareNATS for the noisy tenant: %v, want a 429", err)
	}
	for _, subject := range []string{subjects.API(quiet.id, subjects.OpCreateTicket), "tms.api.not a subject"} {
		if err := o.checkShareNATS(subject); err != nil {
			t.Fatalf("checkShareNATS(%q): %v, want nil", subject, err)
		}
	}
}

// saturateFairShare makes, on o's injected clock, an interval with a fast
// admission (the floor), then one where 101 admissions of the noisy
// tenant and 4 of the quiet one all took 20 ms: a standing queue, so
// that the next interval shares admissions fairly.
func saturateFairShare(t *testing.T, o *Overload, clock *testkit.Clock, noisy, quiet account) {
	t.Helper()
	clock.Advance(time.Second)
	done, _ := o.admit.enter(quiet.id)
	clock.Advance(time.Millisecond)
	done()
	clock.Advance(100 * time.Millisecond)
	var dones []func()
	for i := range 105 {
		tenant := noisy.id
		if i < 4 {
			tenant = quiet.id
		}
		done, why := o.admit.enter(tenant)
		if why != admitted {
			t.Fatalf("admission %d refused (%d)", i, why)
		}
		dones = append(dones, done)
	}
	clock.Advance(20 * time.Millisecond)
	for _, done := range dones {
		done()
	}
	clock.Advance(80 * time.Millisecond)
}
