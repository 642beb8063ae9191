package ingress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/ops/testkit"
	"tms/subjects"
)

// End-to-end tests of feasibility admission (issue 10) over HTTP against
// the real ETA responder and allocator of package workers: what a client
// sees is I2 (no agent-minute twice) and I3 (every ticket inside its
// window) at every read, whatever moved.

// planned is a ticket as GET /tickets/{id} shows it.
type planned struct {
	id, typ, status, agent    string
	slot, createdAt, deadline time.Time
}

func (p planned) minute() string { return p.agent + " " + p.slot.Format(time.RFC3339) }

// tryDo is doOn for goroutines other than the test's: it reports rather
// than fails.
func tryDo(h http.Handler, req request) (int, map[string]any, error) {
	r := httptest.NewRequest(req.method, req.path, bytes.NewReader([]byte(req.body)))
	if req.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		return rec.Code, nil, fmt.Errorf("%s %s: %d body %q: %w", req.method, req.path, rec.Code, rec.Body.Bytes(), err)
	}
	return rec.Code, body, nil
}

// readPlan reads a ticket back and checks I3 on what it shows: a whole
// minute inside [created_at, deadline - 1m], deadline = created_at + SLA.
func (e *ticketEnv) readPlan(a account, id string) (planned, error) {
	code, body, err := tryDo(e.handler, request{method: "GET", path: "/tickets/" + id, token: a.token})
	if err != nil {
		return planned{}, err
	}
	if code != http.StatusOK {
		return planned{}, fmt.Errorf("GET /tickets/%s: %d %v", id, code, body)
	}
	p := planned{id: id}
	p.typ, _ = body["ticket_type"].(string)
	p.status, _ = body["status"].(string)
	p.agent, _ = body["agent_id"].(string)
	for _, f := range []struct {
		name string
		into *time.Time
	}{{"slot_time", &p.slot}, {"created_at", &p.createdAt}, {"deadline", &p.deadline}} {
		s, _ := body[f.name].(string)
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return p, fmt.Errorf("GET /tickets/%s: %s %q: %w", id, f.name, s, err)
		}
		*f.into = ts
	}
	sla, ok := subjects.SLA(p.typ)
	switch {
	case !ok:
		return p, fmt.Errorf("ticket %s: type %q", id, p.typ)
	case p.status != subjects.StatusAccepted && p.status != subjects.StatusAllocated:
		return p, fmt.Errorf("ticket %s: status %q, want accepted or allocated", id, p.status)
	case !p.deadline.Equal(p.createdAt.Add(sla)):
		return p, fmt.Errorf("ticket %s: deadline %s is not created_at %s + %s", id, p.deadline, p.createdAt, sla)
	case !p.slot.Equal(p.slot.Truncate(time.Minute)) || p.slot.Before(p.createdAt) || p.slot.Add(time.Minute).After(p.deadline):
		return p, fmt.Errorf("I3: ticket %s (%s) on %s outside its window [%s, %s]", id, p.typ, p.minute(),
			p.createdAt.Format(time.RFC3339Nano), p.deadline.Format(time.RFC3339Nano))
	}
	return p, nil
}

// readPlans reads every ticket in ids and checks I3 on each and I2 across
// them. The reads are one after another, not a snapshot: two tickets
// that show one agent-minute may be a move seen half way (the first read
// before it left the minute, the second after another ticket took it).
// Such a pair is read again, in the same order, a few times; a pair that
// shares its minute on every round is a double booking.
func (e *ticketEnv) readPlans(a account, ids []string) (map[string]planned, []error) {
	plans := make(map[string]planned, len(ids))
	var errs []error
	byMinute := map[string]string{}
	for _, id := range ids {
		p, err := e.readPlan(a, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plans[id] = p
		other, taken := byMinute[p.minute()]
		if !taken {
			byMinute[p.minute()] = id
			continue
		}
		if err := e.confirmCollision(a, other, id); err != nil {
			errs = append(errs, err)
		}
	}
	return plans, errs
}

// confirmCollision reads tickets x and y again, x first, until they show
// different minutes (nil) or the rounds run out (an I2 violation).
func (e *ticketEnv) confirmCollision(a account, x, y string) error {
	const rounds = 5
	var px, py planned
	var err error
	for range rounds {
		if px, err = e.readPlan(a, x); err != nil {
			return err
		}
		if py, err = e.readPlan(a, y); err != nil {
			return err
		}
		if px.minute() != py.minute() {
			return nil
		}
	}
	return fmt.Errorf("I2: tickets %s and %s both on %s in %d reads", x, y, px.minute(), rounds+1)
}

// createAll creates a ticket of each type in types, one after another,
// and fails the test at the first answer that is not a 201.
func (e *ticketEnv) createAll(t *testing.T, a account, types ...string) []string {
	t.Helper()
	ids := make([]string, 0, len(types))
	for i, typ := range types {
		resp := e.create(t, a, typ, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create_ticket %d of %d (%s): %d %s", i+1, len(types), typ, resp.status, resp.raw)
		}
		ids = append(ids, resp.body["ticket_id"].(string))
	}
	return ids
}

// available is GET /capacity's available per ticket type.
func (e *ticketEnv) available(t *testing.T, a account) map[string]int {
	t.Helper()
	body := e.must(t, http.StatusOK, request{method: "GET", path: "/capacity", token: a.token})
	out := map[string]int{}
	list, _ := body["capacity"].([]any)
	for _, x := range list {
		c, _ := x.(map[string]any)
		typ, _ := c["ticket_type"].(string)
		n, ok := c["available"].(float64)
		if !ok || n < 0 {
			t.Fatalf("GET /capacity: %v", body)
		}
		out[typ] = int(n)
	}
	if len(out) != 3 {
		t.Fatalf("GET /capacity: %v", body)
	}
	return out
}

func repeat(typ string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = typ
	}
	return out
}

// TestFeasibleBronzeThenGold is issue 10's trace: a tenant with 2 agents
// receives 480 BRONZE tickets, then 200 GOLD, all created at the same
// instant (the ticket clock is frozen). Every one fits (2 x 119 GOLD
// minutes, 2 x 479 in all), so feasibility admission accepts all 680,
// moving BRONZE tickets later in their 8 h windows to make room; the
// earliest-slot rule accepted none of the GOLD. GET /capacity then says
// exactly how many more GOLD fit, writing nothing, and the refusal of
// the one after them names the types capacity says still fit. Every
// ticket's slot, as GET shows it, is inside its window, no agent-minute
// is held twice, and the tenant database ends up agreeing with GET.
func TestFeasibleBronzeThenGold(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a := e.openAccount(t, "Bronze then gold", "bronze-gold@example.com")
	agents := map[string]bool{e.addAgent(t, a): true, e.addAgent(t, a): true}

	ids := e.createAll(t, a, repeat(subjects.Bronze, 480)...)
	ids = append(ids, e.createAll(t, a, repeat(subjects.Gold, 200)...)...)

	// GET /capacity changes nothing, and is exact: as many more GOLD as
	// it says are accepted, and the next is refused, saying what fits as
	// a second look at the capacity does.
	records := e.slotRecords(t, a.id)
	golds := e.available(t, a)[subjects.Gold]
	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("GET /capacity wrote %d slot records", n-records)
	}
	ids = append(ids, e.createAll(t, a, repeat(subjects.Gold, golds)...)...)
	refused := e.create(t, a, subjects.Gold, nil)
	if refused.status != http.StatusConflict {
		t.Fatalf("GOLD %d after GET /capacity said %d: %d %s", golds+1, golds, refused.status, refused.raw)
	}
	left := e.available(t, a)
	var fits []any
	for _, typ := range []string{subjects.Gold, subjects.Silver, subjects.Bronze} {
		if left[typ] > 0 {
			fits = append(fits, typ)
		}
	}
	if got, _ := refused.body["fits"].([]any); len(got) != len(fits) || (len(fits) > 0 && !reflect.DeepEqual(got, fits)) {
		t.Errorf("the refusal's fits %v, capacity says %v", refused.body["fits"], left)
	}

	plans, errs := e.readPlans(a, ids)
	for _, err := range errs {
		t.Error(err)
	}
	for _, p := range plans {
		if !agents[p.agent] {
			t.Errorf("ticket %s on %s, not one of the tenant's agents %v", p.id, p.agent, agents)
		}
	}
	if t.Failed() {
		return
	}

	// The tenant database follows the plan, moves included.
	e.startAllocator(t)
	testkit.Eventually(t, 2*time.Minute, func() bool {
		for _, id := range ids {
			row, err := e.row(t, a.id, id)
			if err != nil || row.Status != subjects.StatusAllocated {
				return false
			}
			p, err := e.readPlan(a, id)
			if err != nil || row.Agent != p.agent || !row.SlotTime.Equal(p.slot) {
				return false
			}
		}
		return true
	}, "every ticket's row to hold the agent and slot GET shows")
	if _, errs := e.readPlans(a, ids); len(errs) > 0 {
		t.Errorf("after the allocators: %v", errs)
	}
}

// TestFeasibleConcurrentReadsKeepI2I3: 32 clients of one tenant with 2
// agents create tickets at once, each 4 BRONZE then 4 GOLD (256, which
// all fit, so all are accepted), while a reader GETs every ticket
// accepted so far, over and over: at every read each ticket is inside
// its window and no agent-minute holds two (readPlans).
func TestFeasibleConcurrentReadsKeepI2I3(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a := e.openAccount(t, "Concurrent", "concurrent-feasible@example.com")
	e.addAgent(t, a)
	e.addAgent(t, a)
	const clients, each = 32, 8

	var (
		mu       sync.Mutex
		accepted []string
		failures []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, err)
	}
	// more tells the reader a ticket was accepted since its last pass.
	more := make(chan struct{}, 1)
	var creators sync.WaitGroup
	for c := range clients {
		creators.Go(func() {
			for i := range each {
				typ := subjects.Bronze
				if i >= each/2 {
					typ = subjects.Gold
				}
				code, body, err := tryDo(e.handler, request{method: "POST", path: "/create_ticket", token: a.token,
					body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": typ})})
				if err == nil && code != http.StatusCreated {
					err = fmt.Errorf("client %d, ticket %d (%s): %d %v", c, i, typ, code, body)
				}
				if err != nil {
					fail(err)
					return
				}
				mu.Lock()
				accepted = append(accepted, body["ticket_id"].(string))
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { creators.Wait(); close(done) }()

	reads := 0
	for finished := false; !finished; {
		select {
		case <-more:
		case <-done:
			finished = true // one more pass over everything, at rest
		}
		mu.Lock()
		ids := append([]string(nil), accepted...)
		mu.Unlock()
		_, errs := e.readPlans(a, ids)
		for _, err := range errs {
			t.Errorf("read %d: %v", reads, err)
		}
		reads++
		if t.Failed() {
			<-done
			break
		}
	}
	for _, err := range failures {
		t.Error(err)
	}
	if len(accepted) != clients*each {
		t.Errorf("%d of %d tickets accepted, all of which fit", len(accepted), clients*each)
	}
	t.Logf("%d read passes during and after %d admissions", reads, len(accepted))
}

// TestFeasibleReplanOnAgentLoss: an agent holding 100 future tickets is
// made unavailable while another agent has room. The PATCH re-plans:
// every one of the 100 is moved or reported at risk (moved + at_risk =
// 100); afterwards no ticket is left on the absent agent but those that
// GET /tickets/at-risk lists, every ticket is inside its window and no
// agent-minute holds two. A moved ticket cancels like any other. Each
// move is announced by a moved event on tms.events.<tenant>.moved.
func TestFeasibleReplanOnAgentLoss(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a := e.openAccount(t, "Replan", "replan-e2e@example.com")
	gone := e.addAgent(t, a)
	ids := e.createAll(t, a, repeat(subjects.Bronze, 99)...)
	// One with an Idempotency-Key: its replay names the current plan.
	keyed := e.create(t, a, subjects.Bronze, http.Header{"Idempotency-Key": {"replan-e2e"}})
	if keyed.status != http.StatusCreated {
		t.Fatalf("create_ticket with an Idempotency-Key: %d %s", keyed.status, keyed.raw)
	}
	ids = append(ids, keyed.body["ticket_id"].(string))
	plans, errs := e.readPlans(a, ids)
	for _, err := range errs {
		t.Fatal(err)
	}
	for _, p := range plans {
		if p.agent != gone {
			t.Fatalf("ticket %s on %s with one agent %s", p.id, p.agent, gone)
		}
	}
	stays := e.addAgent(t, a)

	events := make(chan *nats.Msg, 1024)
	sub, err := e.client.ChanSubscribe(subjects.EventSubject(a.id, subjects.EventMoved), events)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.client.Flush(); err != nil {
		t.Fatal(err)
	}
	e.startAllocator(t)

	off := e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + gone, token: a.token,
		body: jsonBody(map[string]string{"agent_status": subjects.AgentUnavailable})})
	replan, _ := off["replan"].(map[string]any)
	moved, okMoved := replan["moved"].(float64)
	atRisk, okRisk := replan["at_risk"].(float64)
	if !okMoved || !okRisk || moved+atRisk != 100 {
		t.Fatalf("PATCH unavailable: replan %v, want moved + at_risk = 100", off["replan"])
	}

	list := e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/at-risk", token: a.token})
	risky := map[string]bool{}
	entries, _ := list["tickets"].([]any)
	for _, x := range entries {
		r := x.(map[string]any)
		id, _ := r["ticket_id"].(string)
		risky[id] = true
		if r["agent_id"] != gone {
			t.Errorf("at-risk ticket %v is not on the absent agent %s", r, gone)
		}
	}
	if len(risky) != int(atRisk) {
		t.Errorf("GET /tickets/at-risk lists %d tickets, the PATCH said %v: %v", len(risky), atRisk, list)
	}
	plans, errs = e.readPlans(a, ids)
	for _, err := range errs {
		t.Error(err)
	}
	for _, p := range plans {
		switch {
		case p.agent == gone && !risky[p.id]:
			t.Errorf("ticket %s left on the absent agent at %s and not listed at risk", p.id, p.slot.Format(time.RFC3339))
		case p.agent != gone && p.agent != stays:
			t.Errorf("ticket %s moved to %s, not the tenant's agent %s", p.id, p.agent, stays)
		case p.agent == stays && risky[p.id]:
			t.Errorf("ticket %s listed at risk but planned on %s", p.id, stays)
		}
	}

	// A replay of the keyed create answers the same ticket at its
	// current slot.
	replay := e.create(t, a, subjects.Bronze, http.Header{"Idempotency-Key": {"replan-e2e"}})
	if p := plans[keyed.body["ticket_id"].(string)]; replay.status != http.StatusCreated || replay.body["ticket_id"] != p.id ||
		replay.body["agent_id"] != p.agent || replay.body["slot_time"] != timestamp(p.slot) || replay.body["created_at"] != keyed.body["created_at"] {
		t.Errorf("replayed create_ticket: %d %s, want ticket %s on %s", replay.status, replay.raw, p.id, p.minute())
	}

	// A moved ticket's cancel releases its current minute (the release
	// names the agent and slot the look-up found, not the id's).
	for _, p := range plans {
		if p.agent != stays {
			continue
		}
		if resp := e.cancel(t, a, p.id); resp.status != http.StatusOK {
			t.Fatalf("cancel of moved ticket %s: %d %s", p.id, resp.status, resp.raw)
		}
		got := e.getTicket(t, a, p.id)
		if got.body["status"] != subjects.StatusCancelled || got.body["agent_id"] != stays || got.body["slot_time"] != timestamp(p.slot) {
			t.Errorf("moved ticket %s after its cancel: %s, want cancelled on %s", p.id, got.raw, p.minute())
		}
		break
	}

	// At least once each: a moved event per ticket moved, naming where
	// it is now as GET shows it.
	seen := map[string]subjects.MoveEvent{}
	testkit.Eventually(t, time.Minute, func() bool {
		for {
			select {
			case m := <-events:
				var ev subjects.MoveEvent
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Fatalf("moved event %q: %v", m.Data, err)
				}
				seen[ev.Ticket] = ev
			default:
				return len(seen) >= int(moved)
			}
		}
	}, "a moved event for every ticket moved")
	for id, ev := range seen {
		p, ok := plans[id]
		switch {
		case !ok:
			t.Errorf("moved event of ticket %s, not one of the tenant's: %+v", id, ev)
		case ev.Event != subjects.EventMoved || ev.Tenant != a.id || ev.FromAgent != gone || ev.Moves < 1:
			t.Errorf("moved event %+v, want event moved from %s", ev, gone)
		case ev.Agent != p.agent || !ev.SlotTime.Equal(p.slot) || !ev.Deadline.Equal(p.deadline):
			t.Errorf("moved event %+v, GET shows %s deadline %s", ev, p.minute(), p.deadline)
		}
	}
}
