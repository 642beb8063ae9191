package ingress

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"tms/subjects"
)

// TestRecentAdmissions: the tenant's create_ticket decisions, newest
// first, over HTTP and NATS alike: accepted with the ticket id, refused
// with the reason and the answer's code; never another tenant's; a
// request refused before it had a tenant (no token) is nobody's.
func TestRecentAdmissions(t *testing.T) {
	t.Parallel()
	e := newScheduleEnv(t)
	a := e.openAccount(t, "Recent A", "ops@recent-a.example")
	b, _ := e.tenantWithAgent(t, "Recent B", "ops@recent-b.example")

	recent := func(acc account) []map[string]any {
		t.Helper()
		body := e.must(t, http.StatusOK, request{method: "GET", path: "/admissions/recent", token: acc.token})
		if body["limit"] != float64(recentPerTenant) || body["scope"] != "process" {
			t.Fatalf("GET /admissions/recent: %v", body)
		}
		var out []map[string]any
		for _, d := range body["decisions"].([]any) {
			m := d.(map[string]any)
			rfc3339UTC(t, "at", m["at"])
			delete(m, "at")
			out = append(out, m)
		}
		return out
	}
	if got := recent(a); len(got) != 0 {
		t.Fatalf("a new tenant has recent decisions %v", got)
	}

	// No agent yet: refused, no slot. Then accepted, over HTTP and NATS; a
	// type no ticket has; a body naming another tenant.
	if resp := e.create(t, a, subjects.Gold, nil); resp.status != http.StatusConflict {
		t.Fatalf("create without agents: %d %s", resp.status, resp.raw)
	}
	e.addAgent(t, a)
	accepted := e.createWhenReady(t, a, subjects.Silver)
	viaNATS := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze}, nil)
	if viaNATS["code"] != float64(http.StatusCreated) {
		t.Fatalf("create_ticket over NATS: %v", viaNATS)
	}
	if resp := e.create(t, a, "PLATINUM"+strings.Repeat("x", 1000), nil); resp.status != http.StatusBadRequest {
		t.Fatalf("create PLATINUM: %d %s", resp.status, resp.raw)
	}
	refusedNATS := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": b.id, "ticket_type": subjects.Gold}, nil)
	if refusedNATS["code"] != float64(http.StatusForbidden) {
		t.Fatalf("create_ticket over NATS naming tenant B: %v", refusedNATS)
	}
	e.do(t, request{method: "POST", path: "/create_ticket", body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})})
	e.createWhenReady(t, b, subjects.Gold)

	got := recent(a)
	// createWhenReady may have been refused (409) before the responder saw
	// the new agent: those refusals are between the first and the accepted.
	if len(got) < 5 {
		t.Fatalf("tenant A's recent decisions %v, want at least 5", got)
	}
	newest := got[:4]
	wantNewest := []map[string]any{
		{"ticket_type": subjects.Gold, "outcome": "refused", "reason": outcomeInvalid, "code": codeForbidden},
		{"ticket_type": admissionTypeInvalid, "outcome": "refused", "reason": outcomeInvalid, "code": codeInvalidField},
		{"ticket_type": subjects.Bronze, "outcome": "accepted", "ticket_id": viaNATS["ticket_id"]},
		{"ticket_type": subjects.Silver, "outcome": "accepted", "ticket_id": accepted["ticket_id"]},
	}
	if jsonBody(newest) != jsonBody(wantNewest) {
		t.Errorf("tenant A's newest decisions\n%s\nwant\n%s", jsonBody(newest), jsonBody(wantNewest))
	}
	for _, d := range got[4:] {
		want := map[string]any{"ticket_type": d["ticket_type"], "outcome": "refused", "reason": outcomeNoSlot, "code": codeSLAUnavailable}
		if jsonBody(d) != jsonBody(want) || (d["ticket_type"] != subjects.Gold && d["ticket_type"] != subjects.Silver) {
			t.Errorf("tenant A's older decision %v, want a no_slot refusal", d)
		}
	}
	if last := got[len(got)-1]; last["ticket_type"] != subjects.Gold {
		t.Errorf("tenant A's oldest decision %v, want the GOLD refused before the agent", last)
	}

	// Tenant B: its own ticket only (and its createWhenReady refusals).
	gotB := recent(b)
	if len(gotB) == 0 || gotB[0]["outcome"] != "accepted" {
		t.Fatalf("tenant B's recent decisions %v", gotB)
	}
	aIDs := []any{accepted["ticket_id"], viaNATS["ticket_id"]}
	for _, d := range gotB {
		for _, id := range aIDs {
			if d["ticket_id"] == id {
				t.Errorf("tenant B's recent decisions show tenant A's ticket %v", id)
			}
		}
	}

	// A query parameter is refused, as is a missing or bad token.
	if resp := e.do(t, request{method: "GET", path: "/admissions/recent?limit=5", token: a.token}); resp.status != http.StatusBadRequest ||
		resp.body["error"] != codeUnknownField {
		t.Errorf("GET /admissions/recent?limit=5: %d %s", resp.status, resp.raw)
	}
	for _, tok := range []string{"", "not-a-token"} {
		if resp := e.do(t, request{method: "GET", path: "/admissions/recent", token: tok}); resp.status != http.StatusUnauthorized {
			t.Errorf("GET /admissions/recent with token %q: %d %s", tok, resp.status, resp.raw)
		}
	}
}

// TestRecentRingBounds: a tenant keeps its last recentPerTenant decisions,
// newest first; the tenants kept are bounded, the least recently decided
// forgotten first; concurrent decisions of many tenants are each kept
// under their own tenant.
func TestRecentRingBounds(t *testing.T) {
	t.Parallel()
	r := newRecentAdmissions()
	for i := range recentPerTenant + 10 {
		r.record("t1", newDecision(subjects.Gold, http.StatusCreated, ""), fmt.Sprintf("ticket-%03d", i))
	}
	body := r.recent("t1")
	if len(body.Decisions) != recentPerTenant || body.Decisions[0].TicketID != fmt.Sprintf("ticket-%03d", recentPerTenant+9) ||
		body.Decisions[recentPerTenant-1].TicketID != "ticket-010" {
		t.Fatalf("ring holds %d, newest %v, oldest %v", len(body.Decisions), body.Decisions[0], body.Decisions[len(body.Decisions)-1])
	}
	if got := r.recent("nobody"); len(got.Decisions) != 0 || got.Decisions == nil {
		t.Errorf("a tenant never seen: %+v", got)
	}
	r.record("", newDecision(subjects.Gold, http.StatusUnauthorized, codeUnauthorized), "")
	if got := tenantsKept(r); got != 1 {
		t.Errorf("a decision without tenant was kept: %d tenants", got)
	}

	// Many tenants, concurrently: at most recentTenants kept, each with
	// its own decisions only.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 400 {
				id := fmt.Sprintf("w%d-t%d", w, i)
				r.record(id, newDecision("BOGUS", http.StatusTooManyRequests, codeRateLimited), "")
				r.record(id, newDecision(subjects.Bronze, http.StatusCreated, ""), id+"-ticket")
			}
		})
	}
	wg.Wait()
	// 3201 tenants over 16 shards of 64: every shard is full.
	if got := tenantsKept(r); got != recentTenants {
		t.Errorf("%d tenants kept, want %d", got, recentTenants)
	}
	// Each ring kept holds its own tenant's decisions only (one, when the
	// tenant was forgotten between its two).
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		var ids []string
		for id := range s.rings {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			for _, d := range r.recent(id).Decisions {
				ok := (d.TicketID == id+"-ticket" && d.Outcome == recentAccepted && d.TicketType == subjects.Bronze) ||
					(d.TicketID == "" && d.Outcome == recentRefused && d.TicketType == admissionTypeInvalid &&
						d.Reason == outcomeRateLimited && d.Code == codeRateLimited)
				if !ok {
					t.Errorf("tenant %s holds %+v", id, d)
				}
			}
		}
	}
	// t1 was decided first: forgotten once its shard filled.
	if d := r.recent("t1").Decisions; len(d) != 0 {
		t.Errorf("t1 kept %d decisions although every shard is full", len(d))
	}
	// The tenant decided last is kept.
	r.record("last", newDecision(subjects.Silver, http.StatusConflict, codeSLAUnavailable), "")
	if d := r.recent("last").Decisions; len(d) != 1 || d[0].Reason != outcomeNoSlot || d[0].Code != codeSLAUnavailable {
		t.Errorf("tenant decided last: %+v", d)
	}
}

func tenantsKept(r *recentAdmissions) int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		if len(s.rings) != s.lru.Len() || len(s.rings) > recentPerShard {
			panic(fmt.Sprintf("shard %d: %d rings, %d in its list", i, len(s.rings), s.lru.Len()))
		}
		n += len(s.rings)
		s.mu.Unlock()
	}
	return n
}
