package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/subjects"
)

// The API conventions (docs/api.md "Conventions"), each through the real
// routers and NATS API over embedded NATS and the test Postgres.

// wantFields checks an answer's RateLimit-Policy and RateLimit fields
// (all their members, in order; "" for a field that must be absent).
func wantFields(t testing.TB, what string, h http.Header, policy, state string) {
	t.Helper()
	gotPolicy := strings.Join(h.Values(rateLimitPolicyField), ", ")
	gotState := strings.Join(h.Values(rateLimitField), ", ")
	if gotPolicy != policy || gotState != state {
		t.Fatalf("%s: RateLimit-Policy %q RateLimit %q, want %q and %q", what, gotPolicy, gotState, policy, state)
	}
}

// natsMsg sends one NATS API request with headers and returns the reply
// and its decoded body.
func (e *ticketEnv) natsMsg(t testing.TB, tenant, op string, body any, header nats.Header) (*nats.Msg, map[string]any) {
	t.Helper()
	msg := &nats.Msg{Subject: subjects.API(tenant, op), Data: []byte(jsonBody(body)), Header: header}
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

// The per-tenant limit's fields follow its bucket on create_ticket and
// the other tenant routes: r counts down to 0, a 429 keeps Retry-After
// and says r=0 with t the same seconds, a refilled token is seen again;
// the NATS API's replies carry the same fields as reply headers. The
// limiter's clock is a test clock.
func TestRateLimitFieldsFollowTheTenantBucket(t *testing.T) {
	t.Parallel()
	limClock := testkit.NewClock(time.Now())
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		c.Overload = newOverload(t, c, OverloadConfig{TenantRate: 1, TenantBurst: 3, Now: limClock.Now})
	}})
	a, _ := e.tenantWithAgent(t, "Metered", "ops@metered.example")
	testkit.Eventually(t, 10*time.Second, func() bool {
		limClock.Advance(time.Hour)
		r := e.create(t, a, subjects.Bronze, nil)
		if r.status != http.StatusCreated && r.status != http.StatusConflict {
			t.Fatalf("create_ticket: %d %s", r.status, r.raw)
		}
		return r.status == http.StatusCreated
	}, "the responder to see the tenant's agent")
	limClock.Advance(time.Hour) // a full bucket

	const policy = `"tenant";q=3;w=3`
	for i, want := range []string{`"tenant";r=2;t=1`, `"tenant";r=1;t=1`, `"tenant";r=0;t=1`} {
		r := e.create(t, a, subjects.Bronze, nil)
		if r.status != http.StatusCreated {
			t.Fatalf("create %d: %d %s", i+1, r.status, r.raw)
		}
		wantFields(t, fmt.Sprintf("create %d", i+1), r.header, policy, want)
	}
	refused := e.create(t, a, subjects.Bronze, nil)
	wantRefused(t, "over the burst", refused, http.StatusTooManyRequests, codeRateLimited, "1")
	wantFields(t, "over the burst", refused.header, policy, `"tenant";r=0;t=1`)
	// Another route of the tenant's draws on the same bucket.
	capacity := e.do(t, request{method: "GET", path: "/capacity", token: a.token})
	wantRefused(t, "capacity over the burst", capacity, http.StatusTooManyRequests, codeRateLimited, "1")
	wantFields(t, "capacity over the burst", capacity.header, policy, `"tenant";r=0;t=1`)
	reply, body := e.natsMsg(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze}, nil)
	wantNATSRefused(t, "NATS over the burst", reply, body, http.StatusTooManyRequests, codeRateLimited, "1")
	if got := reply.Header.Get(rateLimitField); got != `"tenant";r=0;t=1` || reply.Header.Get(rateLimitPolicyField) != policy {
		t.Fatalf("NATS 429: RateLimit %q RateLimit-Policy %q", got, reply.Header.Get(rateLimitPolicyField))
	}

	limClock.Advance(1500 * time.Millisecond) // one token and a half
	r := e.create(t, a, subjects.Bronze, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("after a token refilled: %d %s", r.status, r.raw)
	}
	wantFields(t, "after a token refilled", r.header, policy, `"tenant";r=0;t=1`) // half a token left: rounded up to 1 s
	limClock.Advance(time.Hour)
	got := e.do(t, request{method: "GET", path: "/capacity", token: a.token})
	if got.status != http.StatusOK {
		t.Fatalf("capacity: %d %s", got.status, got.raw)
	}
	wantFields(t, "full again", got.header, policy, `"tenant";r=2;t=1`)
	// The NATS API's replies carry the fields as headers, in the fields'
	// own spelling (NATS headers are case-sensitive).
	reply, body = e.natsMsg(t, a.id, subjects.OpGetCapacity, map[string]string{}, nil)
	if body["code"] != float64(http.StatusOK) || reply.Header.Get(rateLimitPolicyField) != policy ||
		reply.Header.Get(rateLimitField) != `"tenant";r=1;t=1` {
		t.Fatalf("NATS get_capacity: %s, headers %v", reply.Data, reply.Header)
	}

	// A malformed Idempotency-Key is a clear 400 that admits nothing
	// (the request still paid its token: the limit counts requests).
	before := e.slotRecords(t, a.id)
	bad := e.create(t, a, subjects.Bronze, http.Header{"Idempotency-Key": {"tab\there"}})
	if bad.status != http.StatusBadRequest || bad.body["error"] != codeInvalidField ||
		!strings.Contains(bad.body["message"].(string), "Idempotency-Key") {
		t.Fatalf("malformed Idempotency-Key: %d %s", bad.status, bad.raw)
	}
	wantFields(t, "malformed Idempotency-Key", bad.header, policy, `"tenant";r=0;t=1`)
	if n := e.slotRecords(t, a.id); n != before {
		t.Fatalf("a refused request wrote %d slot records", n-before)
	}
}

// With no per-tenant limit (the default) an allowed answer carries no
// RateLimit fields: no quota applies to it.
func TestNoRateLimitFieldsWithoutALimit(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Unmetered", "ops@unmetered.example")
	e.createWhenReady(t, a, subjects.Bronze)
	r := e.create(t, a, subjects.Bronze, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("create_ticket: %d %s", r.status, r.raw)
	}
	wantFields(t, "create_ticket without a tenant limit", r.header, "", "")
	reply, body := e.natsMsg(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze}, nil)
	if body["code"] != float64(http.StatusCreated) || reply.Header != nil {
		t.Fatalf("NATS create_ticket without a tenant limit: %s, headers %v", reply.Data, reply.Header)
	}
}

// create_account lists the failures policy of its address and its
// client_ip bucket, login the failures policy; each refusal names the
// policy that refused, with Retry-After.
func TestRateLimitFieldsOnAccountRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	victim := e.openAccount(t, "Victim", "victim@example.com").id
	clock := testkit.NewClock(time.Now())
	cfg := e.config(func(context.Context) error { return nil })
	cfg.Overload = newOverload(t, &cfg, OverloadConfig{ClientRate: 1, ClientBurst: 2, MaxFailures: 30, Lockout: time.Minute, Now: clock.Now})
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
	const failures, clientIP = `"failures_address";q=30;w=60`, `"client_ip";q=2;w=2`
	const addr = "198.51.100.7:4000"

	// Each malformed body is a 400 and a failure of the address: the
	// next answer shows one fewer failure left, and one is forgotten
	// every 2 s (the lockout over MaxFailures).
	w := create(addr)
	wantStatus(t, "first create", w, http.StatusBadRequest, "")
	wantFields(t, "first create", w.Header(), failures+", "+clientIP, `"failures_address";r=30;t=0, "client_ip";r=1;t=1`)
	w = create(addr)
	wantStatus(t, "second create", w, http.StatusBadRequest, "")
	wantFields(t, "second create", w.Header(), failures+", "+clientIP, `"failures_address";r=29;t=2, "client_ip";r=0;t=1`)
	w = create(addr)
	wantStatus(t, "third create", w, http.StatusTooManyRequests, "1")
	wantFields(t, "third create", w.Header(), clientIP, `"client_ip";r=0;t=1`)

	// login: the failures policy only; the refused create counted for
	// nothing.
	w = loginFrom(h, addr, victim, "wrong password")
	wantStatus(t, "wrong password", w, http.StatusUnauthorized, "")
	wantFields(t, "wrong password", w.Header(), failures, `"failures_address";r=28;t=2`)
	clock.Advance(3 * time.Second) // one of the three failures forgotten, the next in 1 s
	w = loginFrom(h, addr, victim, "correct horse battery")
	wantStatus(t, "login", w, http.StatusOK, "")
	wantFields(t, "login", w.Header(), failures, `"failures_address";r=28;t=1`)
}

// Idempotent-Replayed: true is on an answer replayed from its
// Idempotency-Key, on HTTP and as a NATS reply header, and on nothing
// else: not a first answer, not a request without a key, not a refusal.
func TestIdempotentReplayedOnlyOnReplays(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Replays", "ops@replays.example")
	e.createWhenReady(t, a, subjects.Gold)
	if r := e.create(t, a, subjects.Gold, nil); r.status != http.StatusCreated || r.header.Get(replayedHeader) != "" {
		t.Fatalf("no key: %d %s, Idempotent-Replayed %q", r.status, r.raw, r.header.Get(replayedHeader))
	}

	key := http.Header{"Idempotency-Key": {"order-7"}}
	first := e.create(t, a, subjects.Gold, key)
	if first.status != http.StatusCreated || first.header.Get(replayedHeader) != "" {
		t.Fatalf("first answer: %d %s, Idempotent-Replayed %q", first.status, first.raw, first.header.Get(replayedHeader))
	}
	records := e.slotRecords(t, a.id)
	again := e.create(t, a, subjects.Gold, key)
	if again.status != http.StatusCreated || again.header.Get(replayedHeader) != "true" || again.body["ticket_id"] != first.body["ticket_id"] {
		t.Fatalf("replay: %d %s, Idempotent-Replayed %q", again.status, again.raw, again.header.Get(replayedHeader))
	}
	reused := e.create(t, a, subjects.Silver, key)
	if reused.status != http.StatusUnprocessableEntity || reused.header.Get(replayedHeader) != "" {
		t.Fatalf("key reused with another body: %d %s, Idempotent-Replayed %q", reused.status, reused.raw, reused.header.Get(replayedHeader))
	}

	// NATS: the same key is the same ticket, a replay there too; a new
	// key's first answer is not.
	body := map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}
	reply, got := e.natsMsg(t, a.id, subjects.OpCreateTicket, body, nats.Header{"Idempotency-Key": {"order-7"}})
	if got["code"] != float64(http.StatusCreated) || got["ticket_id"] != first.body["ticket_id"] || reply.Header.Get(replayedHeader) != "true" {
		t.Fatalf("NATS replay: %s, headers %v", reply.Data, reply.Header)
	}
	reply, got = e.natsMsg(t, a.id, subjects.OpCreateTicket, body, nats.Header{"Idempotency-Key": {"order-8"}})
	if got["code"] != float64(http.StatusCreated) || reply.Header.Get(replayedHeader) != "" {
		t.Fatalf("NATS first answer: %s, headers %v", reply.Data, reply.Header)
	}
	second := got["ticket_id"]
	reply, got = e.natsMsg(t, a.id, subjects.OpCreateTicket, body, nats.Header{"Idempotency-Key": {"order-8"}})
	if got["ticket_id"] != second || reply.Header.Get(replayedHeader) != "true" {
		t.Fatalf("NATS replay of a NATS key: %s, headers %v", reply.Data, reply.Header)
	}
	// Bad keys: a clear 400 on both transports, nothing admitted.
	reply, got = e.natsMsg(t, a.id, subjects.OpCreateTicket, body, nats.Header{"Idempotency-Key": {strings.Repeat("k", 129)}})
	if got["code"] != float64(http.StatusBadRequest) || got["error"] != codeInvalidField || reply.Header.Get(replayedHeader) != "" {
		t.Fatalf("NATS key too long: %s, headers %v", reply.Data, reply.Header)
	}
	twice := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"order-7", "order-7"}})
	if twice.status != http.StatusBadRequest || twice.header.Get(replayedHeader) != "" {
		t.Fatalf("key given twice: %d %s", twice.status, twice.raw)
	}
	if n := e.slotRecords(t, a.id); n != records+1 { // order-8's ticket only
		t.Fatalf("%d slot records since the first keyed create, want 1", n-records)
	}
}

// A refusal's status is spelled per operation, alike on HTTP and NATS:
// create_ticket's 409 "rejected", validate_eta's 409 "unavailable" (both
// pinned by the seed's contract), every other error "error" (allocate_slot's
// 410 here).
func TestRefusalStatusSpelling(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a := e.openAccount(t, "Full", "ops@full.example") // no agent: nothing fits

	create := e.create(t, a, subjects.Gold, nil)
	if create.status != http.StatusConflict || create.body["status"] != statusRejected || create.body["error"] != codeSLAUnavailable {
		t.Fatalf("HTTP create_ticket refused: %d %s", create.status, create.raw)
	}
	_, got := e.natsMsg(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}, nil)
	if got["code"] != float64(http.StatusConflict) || got["status"] != statusRejected || got["error"] != codeSLAUnavailable {
		t.Fatalf("NATS create_ticket refused: %v", got)
	}
	validate := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})
	if validate.status != http.StatusConflict || validate.body["status"] != statusUnavailable || validate.body["error"] != codeSLAUnavailable {
		t.Fatalf("HTTP validate_eta refused: %d %s", validate.status, validate.raw)
	}
	_, got = e.natsMsg(t, a.id, subjects.OpValidateETA, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}, nil)
	if got["code"] != float64(http.StatusConflict) || got["status"] != statusUnavailable || got["error"] != codeSLAUnavailable {
		t.Fatalf("NATS validate_eta refused: %v", got)
	}

	// allocate_slot: a hold allocated once is gone the second time.
	e.addAgent(t, a)
	var hold response
	testkit.Eventually(t, 10*time.Second, func() bool {
		hold = e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver})
		return hold.status == http.StatusOK
	}, "a hold")
	req := map[string]string{"client_id": a.id, "ticket_type": subjects.Silver, "slot_id": hold.body["slot_id"].(string)}
	if r := e.internalDo(t, "/allocate_slot", req); r.status != http.StatusCreated {
		t.Fatalf("allocate_slot: %d %s", r.status, r.raw)
	}
	gone := e.internalDo(t, "/allocate_slot", req)
	if gone.status != http.StatusGone || gone.body["status"] != "error" || gone.body["error"] != codeHoldExpired {
		t.Fatalf("HTTP allocate_slot twice: %d %s", gone.status, gone.raw)
	}
	_, got = e.natsMsg(t, a.id, subjects.OpAllocateSlot, req, nil)
	if got["code"] != float64(http.StatusGone) || got["status"] != "error" || got["error"] != codeHoldExpired {
		t.Fatalf("NATS allocate_slot twice: %v", got)
	}
}

// The fair share's 429 names the fair_share policy on HTTP and NATS
// alike, with the share per second the tenant is held to and r=0, t=1
// (its Retry-After); the quiet tenant's 201 carries no fields, no quota
// applying to it. The saturated interval is made as in
// TestFairShareIsSharedByHTTPAndNATS.
func TestFairShareRefusalFieldsThroughTheServer(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now())
	var o *Overload
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		o = newOverload(t, c, OverloadConfig{SoftInFlight: -1, Now: clock.Now})
		c.Overload = o
	}})
	noisy, _ := e.tenantWithAgent(t, "Noisy Fields", "noisyfields@example.com")
	quiet, _ := e.tenantWithAgent(t, "Quiet Fields", "quietfields@example.com")
	e.createWhenReady(t, quiet, subjects.Gold)

	saturateFairShare(t, o, clock, noisy, quiet)

	policy := regexp.MustCompile(`^"fair_share";q=([0-9]+);w=1$`)
	check := func(what, gotPolicy, gotState string) {
		t.Helper()
		m := policy.FindStringSubmatch(gotPolicy)
		if m == nil || gotState != `"fair_share";r=0;t=1` {
			t.Fatalf("%s: RateLimit-Policy %q RateLimit %q", what, gotPolicy, gotState)
		}
		if q, _ := strconv.Atoi(m[1]); q < lightLimit {
			t.Fatalf("%s: a share of %d a second, under the %d a tenant is never shed below", what, q, lightLimit)
		}
	}
	r := e.create(t, noisy, subjects.Gold, nil)
	wantRefused(t, "noisy create_ticket over HTTP", r, http.StatusTooManyRequests, codeRateLimited, "1")
	check("HTTP", strings.Join(r.header.Values(rateLimitPolicyField), ", "), strings.Join(r.header.Values(rateLimitField), ", "))
	reply, body := e.natsMsg(t, noisy.id, subjects.OpCreateTicket, map[string]string{"client_id": noisy.id, "ticket_type": subjects.Gold}, nil)
	wantNATSRefused(t, "noisy create_ticket over NATS", reply, body, http.StatusTooManyRequests, codeRateLimited, "1")
	check("NATS", reply.Header.Get(rateLimitPolicyField), reply.Header.Get(rateLimitField))

	ok := e.create(t, quiet, subjects.Gold, nil)
	if ok.status != http.StatusCreated {
		t.Fatalf("quiet create_ticket: %d %s", ok.status, ok.raw)
	}
	wantFields(t, "quiet create_ticket", ok.header, "", "")
}
