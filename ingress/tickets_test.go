package ingress

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// checkAccepted checks a create_ticket 201 against docs/api.md and I3.
func checkAccepted(t *testing.T, body map[string]any, typ, agent string) {
	t.Helper()
	id, _ := body["ticket_id"].(string)
	if body["status"] != "accepted" || body["ticket_type"] != typ || body["agent_id"] != agent {
		t.Fatalf("create_ticket answered %v", body)
	}
	created := rfc3339UTC(t, "created_at", body["created_at"])
	slot := rfc3339UTC(t, "slot_time", body["slot_time"])
	checkTicketID(t, id, agent, slot)
	deadline := rfc3339UTC(t, "deadline", body["deadline"])
	sla, _ := subjects.SLA(typ)
	if !deadline.Equal(created.Add(sla)) {
		t.Errorf("deadline %v, want created_at + %v", deadline, sla)
	}
	if !slot.Equal(slot.Truncate(time.Minute)) || slot.Before(created) || slot.Add(time.Minute).After(deadline) {
		t.Errorf("slot %v outside [%v, %v - 1m]", slot, created, deadline)
	}
	if len(body) != 7 {
		t.Errorf("create_ticket answered extra fields: %v", body)
	}
}

func TestCreateReadThenAllocated(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Acme", "ops@acme.example")

	created := e.createWhenReady(t, a, subjects.Gold)
	checkAccepted(t, created, subjects.Gold, agent)
	id := created["ticket_id"].(string)

	// Readable at once, before any worker has written it.
	got := e.getTicket(t, a, id)
	want := map[string]any{"ticket_id": id, "ticket_type": "GOLD", "status": "accepted", "slot_time": created["slot_time"],
		"deadline": created["deadline"], "agent_id": agent, "created_at": created["created_at"]}
	if got.status != http.StatusOK || !reflect.DeepEqual(got.body, want) {
		t.Fatalf("GET before the worker: %d %s, want %v", got.status, got.raw, want)
	}
	// One write: the ticket's confirmed record is its hand-off.
	if n := e.slotRecords(t, a.id); n != 1 {
		t.Errorf("%d slot records, want 1", n)
	}
	if keys := e.slotKeys(t, a.id); len(keys) != 1 {
		t.Errorf("slot keys %v, want one", keys)
	}
	if h := e.slotHistory(t, a.id, id); len(h) != 1 || h[0].rec.State != subjects.SlotConfirmed || h[0].rec.Ticket != id ||
		h[0].rec.Prev != 0 || !h[0].rec.CreatedAt.Equal(rfc3339UTC(t, "created_at", created["created_at"])) ||
		!h[0].rec.Deadline.Equal(rfc3339UTC(t, "deadline", created["deadline"])) || h[0].rec.Type != subjects.Gold {
		t.Errorf("slot records %+v, want the ticket's confirmed record", h)
	}

	e.startAllocator(t)
	want["status"] = "allocated"
	testkit.Eventually(t, 20*time.Second, func() bool {
		got := e.getTicket(t, a, id)
		return got.status == http.StatusOK && reflect.DeepEqual(got.body, want)
	}, "the ticket to read allocated")
	row, err := e.row(t, a.id, id)
	if err != nil || row.Status != subjects.StatusAllocated || row.Agent != agent || row.Type != subjects.Gold {
		t.Errorf("tenant row %+v, %v", row, err)
	}
	// The allocator wrote the row and nothing else: the record stays,
	// and the row wins over it.
	if n := e.slotRecords(t, a.id); n != 1 {
		t.Errorf("%d slot records after the allocator, want 1", n)
	}
}

func TestRejectionLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})

	// No agent at all.
	none := e.openAccount(t, "Empty", "ops@empty.example")
	resp := e.create(t, none, subjects.Gold, http.Header{"Idempotency-Key": {"no-agent-1"}})
	if resp.status != http.StatusConflict || resp.body["status"] != "rejected" || resp.body["error"] != "sla_unavailable" {
		t.Fatalf("create without agents: %d %s", resp.status, resp.raw)
	}
	if n := e.slotRecords(t, none.id); n != 0 {
		t.Errorf("a rejection left %d slot records", n)
	}
	if keys := e.slotKeys(t, none.id); len(keys) != 0 {
		t.Errorf("a rejection left slot keys %v", keys)
	}
	if keys := e.idempotencyKeys(t, none.id); len(keys) != 0 {
		t.Errorf("a rejection left idempotency keys %v", keys)
	}

	// One agent, at GOLD capacity: about 120 accepted, then 409s that
	// change nothing, while a longer SLA still fits.
	a, agent := e.tenantWithAgent(t, "Full", "ops@full.example")
	first := e.createWhenReady(t, a, subjects.Gold)
	seen := map[string]bool{first["slot_time"].(string): true}
	accepted := 1
	for {
		resp := e.create(t, a, subjects.Gold, nil)
		if resp.status == http.StatusConflict {
			if resp.body["status"] != "rejected" || resp.body["error"] != "sla_unavailable" {
				t.Fatalf("409 body %s", resp.raw)
			}
			break
		}
		if resp.status != http.StatusCreated {
			t.Fatalf("create %d: %d %s", accepted+1, resp.status, resp.raw)
		}
		checkAccepted(t, resp.body, subjects.Gold, agent)
		slot := resp.body["slot_time"].(string)
		if seen[slot] {
			t.Fatalf("slot %s given twice", slot)
		}
		seen[slot] = true
		if accepted++; accepted > 121 {
			t.Fatalf("more than 121 GOLD tickets for one agent")
		}
	}
	if accepted < 119 {
		t.Errorf("%d GOLD tickets accepted, want 119-121", accepted)
	}
	for range 3 {
		if resp := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"full"}}); resp.status != http.StatusConflict {
			t.Fatalf("create at capacity: %d %s", resp.status, resp.raw)
		}
	}
	if n := e.slotRecords(t, a.id); n != uint64(accepted) {
		t.Errorf("%d slot records for %d accepted tickets", n, accepted)
	}
	if keys := e.slotKeys(t, a.id); len(keys) != accepted {
		t.Errorf("%d slot keys for %d accepted tickets", len(keys), accepted)
	}
	if keys := e.idempotencyKeys(t, a.id); len(keys) != 0 {
		t.Errorf("rejections left idempotency keys %v", keys)
	}

	// The two-phase form at capacity: a BRONZE hold lies beyond GOLD's
	// window, so it cannot become a GOLD ticket, but it can a BRONZE one.
	hold := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta BRONZE: %d %s", hold.status, hold.raw)
	}
	slotID := hold.body["slot_id"].(string)
	if gold := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}); gold.status != http.StatusConflict || gold.body["status"] != "unavailable" {
		t.Errorf("validate_eta GOLD at capacity: %d %s", gold.status, gold.raw)
	}
	mismatch := e.internalDo(t, "/allocate_slot", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold, "slot_id": slotID})
	if mismatch.status != http.StatusConflict || mismatch.body["error"] != "type_mismatch" {
		t.Errorf("allocate GOLD into a BRONZE hold: %d %s", mismatch.status, mismatch.raw)
	}
	if ok := e.internalDo(t, "/allocate_slot", map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze, "slot_id": slotID}); ok.status != http.StatusCreated {
		t.Errorf("allocate BRONZE: %d %s", ok.status, ok.raw)
	}
}

func TestCancelFreesTheSlotForTheNextCreate(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Hooli", "ops@hooli.example")
	first := e.createWhenReady(t, a, subjects.Gold)
	second := e.must(t, http.StatusCreated, request{method: "POST", path: "/create_ticket", token: a.token,
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})})
	if first["slot_time"] == second["slot_time"] {
		t.Fatalf("two tickets in one slot: %v %v", first, second)
	}
	id := first["ticket_id"].(string)

	want := map[string]any{"status": "cancelled", "ticket_id": id}
	for i := range 2 { // repeating it answers the same
		if got := e.cancel(t, a, id); got.status != http.StatusOK || !reflect.DeepEqual(got.body, want) {
			t.Fatalf("cancel #%d: %d %s", i+1, got.status, got.raw)
		}
	}
	got := e.getTicket(t, a, id)
	if got.status != http.StatusOK || got.body["status"] != "cancelled" || got.body["slot_time"] != first["slot_time"] {
		t.Errorf("GET cancelled: %d %s", got.status, got.raw)
	}
	// Two cancels, one released record: the ticket's cancel.
	if h := e.slotHistory(t, a.id, id); len(h) != 2 || h[1].rec.State != subjects.SlotReleased || h[1].rec.Ticket != id ||
		h[1].rec.Prev != h[0].rev || h[1].rec.CancelledAt == nil {
		t.Errorf("slot records after two cancels: %v", states(h))
	}

	// The very next create takes the freed slot (the earliest free one).
	third := e.create(t, a, subjects.Gold, nil)
	if third.status != http.StatusCreated || third.body["slot_time"] != first["slot_time"] || third.body["agent_id"] != agent {
		t.Fatalf("create after cancel: %d %s, want slot %v", third.status, third.raw, first["slot_time"])
	}
	thirdID := third.body["ticket_id"].(string)
	h := e.slotHistory(t, a.id, thirdID)
	if want := []string{"confirmed:" + id, "released:" + id, "confirmed:" + thirdID}; !reflect.DeepEqual(states(h), want) || h[2].rec.Prev != h[1].rev {
		t.Errorf("slot records of the minute: %v, want %v each over the last", states(h), want)
	}
	// The cancelled ticket still reads cancelled, from under the new
	// holder's record; the new one reads accepted.
	if got := e.getTicket(t, a, id); got.status != http.StatusOK || got.body["status"] != "cancelled" {
		t.Errorf("GET cancelled after its minute was taken again: %d %s", got.status, got.raw)
	}
	if got := e.getTicket(t, a, thirdID); got.status != http.StatusOK || got.body["status"] != "accepted" {
		t.Errorf("GET of the minute's new ticket: %d %s", got.status, got.raw)
	}
	// Cancelling the old ticket again leaves the new holder alone.
	if got := e.cancel(t, a, id); got.status != http.StatusOK || !reflect.DeepEqual(got.body, want) {
		t.Fatalf("cancel after the minute was taken again: %d %s", got.status, got.raw)
	}
	if h := e.slotHistory(t, a.id, thirdID); len(h) != 3 {
		t.Errorf("a repeated cancel wrote: %v", states(h))
	}

	// The worker, started late, writes the cancel and both live tickets.
	e.startAllocator(t)
	testkit.Eventually(t, 20*time.Second, func() bool {
		r1, err1 := e.row(t, a.id, id)
		r3, err3 := e.row(t, a.id, thirdID)
		return err1 == nil && err3 == nil && r1.Status == subjects.StatusCancelled && r3.Status == subjects.StatusAllocated
	}, "the cancelled and the new ticket in the tenant database")
	if got := e.cancel(t, a, id); got.status != http.StatusOK || !reflect.DeepEqual(got.body, want) {
		t.Errorf("cancel after the worker: %d %s", got.status, got.raw)
	}
	if got := e.getTicket(t, a, id); got.body["status"] != "cancelled" {
		t.Errorf("GET after the worker: %s", got.raw)
	}
}

// TestOldTicketReadAndCancelled: a ticket of the version before ticket
// ids named their slot lives only in its tenant database: GET reads it
// there, and cancel_ticket cancels the row there (no slot record can
// carry it), once; nothing is written to the slot buckets.
func TestOldTicketReadAndCancelled(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true})
	a := e.openAccount(t, "Legacy", "ops@legacy.example")
	old := e.oldTicket(t, a, e.addAgent(t, a))

	if got := e.getTicket(t, a, old.Ticket); got.status != http.StatusOK || got.body["status"] != subjects.StatusAllocated ||
		got.body["agent_id"] != old.Agent || got.body["slot_time"] != timestamp(old.SlotTime) {
		t.Fatalf("GET of an old ticket: %d %s", got.status, got.raw)
	}
	want := map[string]any{"status": "cancelled", "ticket_id": old.Ticket}
	for i := range 2 {
		if got := e.cancel(t, a, old.Ticket); got.status != http.StatusOK || !reflect.DeepEqual(got.body, want) {
			t.Fatalf("cancel #%d of an old ticket: %d %s", i+1, got.status, got.raw)
		}
	}
	row, err := e.row(t, a.id, old.Ticket)
	if err != nil || row.Status != subjects.StatusCancelled || row.CancelledAt == nil {
		t.Errorf("row after the cancel: %+v %v", row, err)
	}
	if got := e.getTicket(t, a, old.Ticket); got.body["status"] != subjects.StatusCancelled {
		t.Errorf("GET after the cancel: %s", got.raw)
	}
	if n := e.slotRecords(t, a.id); n != 0 {
		t.Errorf("%d slot records for an old ticket", n)
	}
}

// TestAfterReserveSeesTheWrittenTicket: the AfterReserve fault point (a
// crash there is a ticket its client never heard of) runs once per
// admission, create and allocate_slot alike, after the responder wrote
// the ticket's record and before the client's answer, with the ticket id
// the answer then carries.
func TestAfterReserveSeesTheWrittenTicket(t *testing.T) {
	t.Parallel()
	type seen struct {
		ticket  string
		written bool
	}
	var e *ticketEnv
	var mu sync.Mutex
	var calls []seen
	var tenant string // set before the first admission
	e = newTicketEnv(t, ticketEnvOptions{afterReserve: func(ticket string) {
		h := e.slotHistory(t, tenant, ticket)
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, seen{ticket: ticket, written: len(h) > 0 && h[len(h)-1].rec.Ticket == ticket})
	}})
	a, _ := e.tenantWithAgent(t, "Hooked", "ops@hooked.example")
	tenant = a.id
	created := e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)
	hold := e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver})
	if hold.status != http.StatusOK {
		t.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	alloc := e.internalDo(t, "/allocate_slot", map[string]any{"client_id": a.id, "ticket_type": subjects.Silver, "slot_id": hold.body["slot_id"]})
	if alloc.status != http.StatusCreated {
		t.Fatalf("allocate_slot: %d %s", alloc.status, alloc.raw)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []seen{{created, true}, {alloc.body["ticket_id"].(string), true}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("AfterReserve saw %+v, want %+v", calls, want)
	}
}

func TestAnotherTenantsTicketIsNotFound(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Stark", "ops@stark.example")
	b := e.openAccount(t, "Wayne", "ops@wayne.example")
	id := e.createWhenReady(t, a, subjects.Silver)["ticket_id"].(string)

	for _, id := range []string{id, "t" + "aaaaaaaaaaaaaaaaaaaa", "NOT.AN.ID"} {
		for _, resp := range []response{e.getTicket(t, b, id), e.cancel(t, b, id)} {
			if resp.status != http.StatusNotFound || resp.body["error"] != "ticket_not_found" {
				t.Errorf("tenant b on %s: %d %s", id, resp.status, resp.raw)
			}
		}
	}
	if got := e.getTicket(t, a, id); got.body["status"] != "accepted" {
		t.Errorf("the owner's ticket after b's attempts: %s", got.raw)
	}
	if n := e.slotRecords(t, a.id); n != 1 {
		t.Errorf("%d slot records for a, want 1 (b's cancel must not reach it)", n)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Soylent", "ops@soylent.example")
	e.createWhenReady(t, a, subjects.Gold)
	base := e.slotRecords(t, a.id)

	key := http.Header{"Idempotency-Key": {"order-42 / retry"}}
	first := e.create(t, a, subjects.Gold, key)
	again := e.create(t, a, subjects.Gold, key)
	if first.status != http.StatusCreated || again.status != http.StatusCreated || !reflect.DeepEqual(first.body, again.body) {
		t.Fatalf("same key twice:\n%d %s\n%d %s", first.status, first.raw, again.status, again.raw)
	}
	// The NATS API shares the records: the same key there is the same ticket.
	overNATS := e.natsCall(t, a.id, subjects.OpCreateTicket,
		map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}, map[string][]string{"Idempotency-Key": {"order-42 / retry"}})
	if overNATS["code"] != float64(201) || overNATS["ticket_id"] != first.body["ticket_id"] {
		t.Errorf("same key over NATS: %v", overNATS)
	}
	if n := e.slotRecords(t, a.id); n != base+1 {
		t.Errorf("%d new slot records, want 1", n-base)
	}

	reused := e.create(t, a, subjects.Silver, key)
	if reused.status != http.StatusUnprocessableEntity || reused.body["error"] != "idempotency_key_reused" {
		t.Errorf("same key, other body: %d %s", reused.status, reused.raw)
	}

	// Concurrent twins make one ticket.
	twinKey := http.Header{"Idempotency-Key": {"twins"}}
	const twins = 8
	answers := make([]response, twins)
	var wg sync.WaitGroup
	for i := range twins {
		wg.Go(func() { answers[i] = e.create(t, a, subjects.Bronze, twinKey) })
	}
	wg.Wait()
	ticket := ""
	for _, resp := range answers {
		switch {
		case resp.status == http.StatusCreated:
			if ticket == "" {
				ticket = resp.body["ticket_id"].(string)
			}
			if resp.body["ticket_id"] != ticket {
				t.Errorf("twins got two tickets: %s and %v", ticket, resp.body["ticket_id"])
			}
		case resp.status == http.StatusConflict && resp.body["error"] == "idempotency_key_in_use":
		default:
			t.Errorf("twin: %d %s", resp.status, resp.raw)
		}
	}
	if ticket == "" {
		t.Error("no twin got a 201")
	}
	if n := e.slotRecords(t, a.id); n != base+2 {
		t.Errorf("%d new slot records after the twins, want 2", n-base)
	}
}

func TestIdempotencyKeyForgetsARejection(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a := e.openAccount(t, "Tyrell", "ops@tyrell.example")
	key := http.Header{"Idempotency-Key": {"k1"}}
	if resp := e.create(t, a, subjects.Gold, key); resp.status != http.StatusConflict {
		t.Fatalf("create without agents: %d %s", resp.status, resp.raw)
	}
	if keys := e.idempotencyKeys(t, a.id); len(keys) != 0 {
		t.Fatalf("the rejection is remembered: %v", keys)
	}
	e.addAgent(t, a)
	// Once the responder knows the agent, the same key is a new attempt.
	var created response
	testkit.Eventually(t, 10*time.Second, func() bool {
		created = e.create(t, a, subjects.Gold, key)
		return created.status == http.StatusCreated
	}, "the key to admit a ticket")
	if again := e.create(t, a, subjects.Gold, key); !reflect.DeepEqual(again.body, created.body) {
		t.Errorf("after the 201 the key answers %s, want %s", again.raw, created.raw)
	}
	if keys := e.idempotencyKeys(t, a.id); len(keys) != 1 {
		t.Errorf("idempotency keys %v, want one", keys)
	}
}

func TestTwoPhaseValidateThenAllocate(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Nakatomi", "ops@nakatomi.example")
	var hold response
	testkit.Eventually(t, 10*time.Second, func() bool {
		hold = e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver})
		return hold.status == http.StatusOK
	}, "a hold")
	slotID, _ := hold.body["slot_id"].(string)
	if hold.body["status"] != "available" || slotID == "" || len(hold.body) != 4 {
		t.Fatalf("validate_eta answered %s", hold.raw)
	}
	slot := rfc3339UTC(t, "slot_time", hold.body["slot_time"])
	rfc3339UTC(t, "hold_expires_at", hold.body["hold_expires_at"])
	heldAt := e.clock.Now()

	// Allocation happens later; the ticket is still judged from the hold.
	e.clock.Advance(5 * time.Second)
	alloc := e.internalDo(t, "/allocate_slot", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver, "slot_id": slotID})
	id, _ := alloc.body["ticket_id"].(string)
	if alloc.status != http.StatusCreated || alloc.body["status"] != "allocated" {
		t.Fatalf("allocate_slot: %d %s", alloc.status, alloc.raw)
	}
	checkTicketID(t, id, agent, slot)
	got := e.getTicket(t, a, id)
	if got.status != http.StatusOK || got.body["status"] != "accepted" || got.body["agent_id"] != agent ||
		!rfc3339UTC(t, "slot_time", got.body["slot_time"]).Equal(slot) {
		t.Fatalf("GET of the allocated ticket: %d %s", got.status, got.raw)
	}
	if c := rfc3339UTC(t, "created_at", got.body["created_at"]); !c.Equal(subjects.Stamp(heldAt)) {
		t.Errorf("created_at %v, want the hold's instant %v", c, subjects.Stamp(heldAt))
	}

	again := e.internalDo(t, "/allocate_slot", map[string]string{"client_id": a.id, "ticket_type": subjects.Silver, "slot_id": slotID})
	if again.status != http.StatusGone || again.body["error"] != "hold_expired" {
		t.Errorf("allocating a hold twice: %d %s", again.status, again.raw)
	}
	// The hold, then the ticket over it; the second allocate wrote
	// nothing.
	if h := e.slotHistory(t, a.id, id); !reflect.DeepEqual(states(h), []string{"held", "confirmed:" + id}) ||
		h[1].rec.Prev != h[0].rev {
		t.Errorf("slot records %v, want the hold and the ticket over it", states(h))
	}
	if n := e.slotRecords(t, a.id); n != 2 {
		t.Errorf("%d slot records, want 2", n)
	}
}

func TestAllocateAfterHoldExpiry(t *testing.T) {
	t.Parallel()
	const holdTTL = time.Second
	e := newTicketEnv(t, ticketEnvOptions{holdTTL: holdTTL})
	a, agent := e.tenantWithAgent(t, "Oscorp", "ops@oscorp.example")
	// A second into a minute: the hold's minute (the next one) is still
	// ahead once the hold has expired.
	now := e.clock.Now()
	e.clock.Set(now.Truncate(time.Minute).Add(time.Minute + time.Second))
	var hold response
	testkit.Eventually(t, 10*time.Second, func() bool {
		hold = e.internalDo(t, "/validate_eta", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})
		return hold.status == http.StatusOK
	}, "a hold")
	slotID := hold.body["slot_id"].(string)
	holdAgent, minute, _, err := subjects.ParseSlotID(slotID)
	if err != nil || holdAgent != agent {
		t.Fatalf("slot_id %q: %v", slotID, err)
	}
	records := e.slotRecords(t, a.id)

	// A hold ends at its expiry, on the responders' clock, without a write.
	e.clock.Advance(holdTTL)
	resp := e.internalDo(t, "/allocate_slot", map[string]string{"client_id": a.id, "ticket_type": subjects.Gold, "slot_id": slotID})
	if resp.status != http.StatusGone || resp.body["error"] != "hold_expired" {
		t.Fatalf("allocate after expiry: %d %s", resp.status, resp.raw)
	}
	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("slot records %d -> %d after a refused allocation", records, n)
	}
	// The slot is free again for a create.
	got := e.create(t, a, subjects.Gold, nil)
	if got.status != http.StatusCreated || !rfc3339UTC(t, "slot_time", got.body["slot_time"]).Equal(minute) {
		t.Fatalf("create after expiry: %d %s, want the freed slot %v", got.status, got.raw, minute)
	}
	id := got.body["ticket_id"].(string)
	if h := e.slotHistory(t, a.id, id); !reflect.DeepEqual(states(h), []string{"held", "confirmed:" + id}) {
		t.Errorf("slot records %v, want the expired hold and the ticket over it", states(h))
	}
}

func TestNATSAPI(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Wonka", "ops@wonka.example")
	b := e.openAccount(t, "Gekko", "ops@gekko.example")
	e.createWhenReady(t, a, subjects.Gold)
	base := e.slotRecords(t, a.id)

	created := e.natsCall(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Gold}, nil)
	if created["code"] != float64(http.StatusCreated) {
		t.Fatalf("create over NATS: %v", created)
	}
	delete(created, "code")
	checkAccepted(t, created, subjects.Gold, agent)
	id := created["ticket_id"].(string)

	// The same ticket over HTTP and over NATS reads the same.
	overHTTP := e.getTicket(t, a, id)
	overNATS := e.natsCall(t, a.id, subjects.OpGetTicket, map[string]string{"ticket_id": id}, nil)
	if overNATS["code"] != float64(http.StatusOK) {
		t.Fatalf("get over NATS: %v", overNATS)
	}
	delete(overNATS, "code")
	if !reflect.DeepEqual(overNATS, overHTTP.body) {
		t.Errorf("get over NATS %v, over HTTP %v", overNATS, overHTTP.body)
	}

	refusals := []struct {
		name, tenant, op string
		body             any
		code             float64
		error            string
	}{
		{"body names another tenant", a.id, subjects.OpCreateTicket, map[string]string{"client_id": b.id, "ticket_type": "GOLD"}, 403, "forbidden"},
		{"subject names another tenant", b.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": "GOLD"}, 403, "forbidden"},
		{"hold for another tenant", a.id, subjects.OpValidateETA, map[string]string{"client_id": b.id, "ticket_type": "GOLD"}, 403, "forbidden"},
		{"allocate for another tenant", b.id, subjects.OpAllocateSlot, map[string]string{"client_id": a.id, "ticket_type": "GOLD", "slot_id": "202601010000-x-aaaaaaaaaaaa"}, 403, "forbidden"},
		{"another tenant's ticket", b.id, subjects.OpGetTicket, map[string]string{"ticket_id": id}, 404, "ticket_not_found"},
		{"cancel another tenant's ticket", b.id, subjects.OpCancelTicket, map[string]string{"ticket_id": id}, 404, "ticket_not_found"},
		{"unknown tenant", "no-such-client", subjects.OpCreateTicket, map[string]string{"client_id": "no-such-client", "ticket_type": "GOLD"}, 404, "client_not_found"},
		{"unknown op", a.id, "delete_everything", map[string]string{}, 404, "not_found"},
		{"bad type", a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": "gold"}, 400, "invalid_field"},
		{"unknown field", a.id, subjects.OpCreateTicket, `{"client_id":"` + a.id + `","ticket_type":"GOLD","priority":1}`, 400, "unknown_field"},
		{"malformed", a.id, subjects.OpCreateTicket, `{"client_id":`, 400, "invalid_json"},
		{"too large", a.id, subjects.OpCreateTicket, `{"client_id":"` + strings.Repeat("x", maxBodyBytes) + `"}`, 413, "body_too_large"},
	}
	for _, r := range refusals {
		got := e.natsCall(t, r.tenant, r.op, r.body, nil)
		if got["code"] != r.code || got["status"] != "error" || got["error"] != r.error || got["message"] == "" {
			t.Errorf("%s: %v, want %v %s", r.name, got, r.code, r.error)
		}
	}
	if n := e.slotRecords(t, a.id); n != base+1 {
		t.Errorf("%d new slot records for a, want 1", n-base)
	}
	if n := e.slotRecords(t, b.id); n != 0 {
		t.Errorf("%d slot records for b, want 0", n)
	}

	// Cancel over NATS, then the two-phase form.
	if got := e.natsCall(t, a.id, subjects.OpCancelTicket, map[string]string{"ticket_id": id}, nil); got["code"] != float64(200) || got["status"] != "cancelled" {
		t.Errorf("cancel over NATS: %v", got)
	}
	hold := e.natsCall(t, a.id, subjects.OpValidateETA, map[string]string{"client_id": a.id, "ticket_type": "BRONZE"}, nil)
	if hold["code"] != float64(200) || hold["status"] != "available" {
		t.Fatalf("validate_eta over NATS: %v", hold)
	}
	alloc := e.natsCall(t, a.id, subjects.OpAllocateSlot, map[string]any{"client_id": a.id, "ticket_type": "BRONZE", "slot_id": hold["slot_id"]}, nil)
	if alloc["code"] != float64(201) || alloc["status"] != "allocated" {
		t.Errorf("allocate_slot over NATS: %v", alloc)
	}
}

// TestTicketBadInputsChangeNothing is badinput_test.go for the ticket
// endpoints: status, code and the field named; nothing written (I7).
func TestTicketBadInputsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Cyberdyne", "ops@cyberdyne.example")
	b, _ := e.tenantWithAgent(t, "Umbrella", "ops@umbrella.example")
	bTicket := e.createWhenReady(t, b, subjects.Gold)["ticket_id"].(string)
	aBase, bBase := e.slotRecords(t, a.id), e.slotRecords(t, b.id)
	aSlots, bSlots := len(e.slotKeys(t, a.id)), len(e.slotKeys(t, b.id))

	create := func(typ string) string { return `{"client_id":"` + a.id + `","ticket_type":"` + typ + `"}` }
	long := strings.Repeat("k", maxIdempotencyKeyLen+1)
	tests := []struct {
		name        string
		internal    bool
		method      string
		path        string
		noToken     bool
		header      http.Header
		contentType string
		body        string
		status      int
		code        string
		mention     string
	}{
		// create_ticket
		{name: "create no token", method: "POST", path: "/create_ticket", noToken: true, body: create("GOLD"), status: 401, code: codeUnauthorized},
		{name: "create lower-case type", method: "POST", path: "/create_ticket", body: create("gold"), status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "create unknown type", method: "POST", path: "/create_ticket", body: create("PLATINUM"), status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "create missing type", method: "POST", path: "/create_ticket", body: `{"client_id":"` + a.id + `"}`, status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "create type null", method: "POST", path: "/create_ticket", body: `{"client_id":"` + a.id + `","ticket_type":null}`, status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "create type number", method: "POST", path: "/create_ticket", body: `{"client_id":"` + a.id + `","ticket_type":1}`, status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "create unknown field", method: "POST", path: "/create_ticket", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD","agent_id":"x"}`, status: 400, code: codeUnknownField, mention: "agent_id"},
		{name: "create other tenant", method: "POST", path: "/create_ticket", body: `{"client_id":"` + b.id + `","ticket_type":"GOLD"}`, status: 403, code: codeForbidden, mention: "client_id"},
		{name: "create malformed", method: "POST", path: "/create_ticket", body: `{"client_id":`, status: 400, code: codeInvalidJSON},
		{name: "create text/plain", method: "POST", path: "/create_ticket", contentType: "text/plain", body: create("GOLD"), status: 415, code: codeUnsupportedMediaType},
		{name: "create empty key", method: "POST", path: "/create_ticket", header: http.Header{"Idempotency-Key": {""}}, body: create("GOLD"), status: 400, code: codeInvalidField, mention: "Idempotency-Key"},
		{name: "create long key", method: "POST", path: "/create_ticket", header: http.Header{"Idempotency-Key": {long}}, body: create("GOLD"), status: 400, code: codeInvalidField, mention: "Idempotency-Key"},
		{name: "create non-ASCII key", method: "POST", path: "/create_ticket", header: http.Header{"Idempotency-Key": {"clé"}}, body: create("GOLD"), status: 400, code: codeInvalidField, mention: "Idempotency-Key"},
		{name: "create two keys", method: "POST", path: "/create_ticket", header: http.Header{"Idempotency-Key": {"a", "b"}}, body: create("GOLD"), status: 400, code: codeInvalidField, mention: "Idempotency-Key"},
		{name: "create get", method: "GET", path: "/create_ticket", status: 405, code: codeMethodNotAllowed},

		// cancel_ticket and GET /tickets/{id}
		{name: "cancel no token", method: "POST", path: "/cancel_ticket", noToken: true, body: `{"ticket_id":"` + bTicket + `"}`, status: 401, code: codeUnauthorized},
		{name: "cancel other tenant's", method: "POST", path: "/cancel_ticket", body: `{"ticket_id":"` + bTicket + `"}`, status: 404, code: codeTicketNotFound, mention: "ticket_id"},
		{name: "cancel unknown", method: "POST", path: "/cancel_ticket", body: `{"ticket_id":"tnosuchticket"}`, status: 404, code: codeTicketNotFound, mention: "ticket_id"},
		{name: "cancel malformed id", method: "POST", path: "/cancel_ticket", body: `{"ticket_id":"T.*"}`, status: 404, code: codeTicketNotFound, mention: "ticket_id"},
		{name: "cancel missing id", method: "POST", path: "/cancel_ticket", body: `{}`, status: 400, code: codeInvalidField, mention: "ticket_id"},
		{name: "cancel id number", method: "POST", path: "/cancel_ticket", body: `{"ticket_id":7}`, status: 400, code: codeInvalidField, mention: "ticket_id"},
		{name: "cancel unknown field", method: "POST", path: "/cancel_ticket", body: `{"ticket_id":"x","client_id":"` + a.id + `"}`, status: 400, code: codeUnknownField, mention: "client_id"},
		{name: "get no token", method: "GET", path: "/tickets/" + bTicket, noToken: true, status: 401, code: codeUnauthorized},
		{name: "get other tenant's", method: "GET", path: "/tickets/" + bTicket, status: 404, code: codeTicketNotFound},
		{name: "get malformed id", method: "GET", path: "/tickets/NOT.AN.ID", status: 404, code: codeTicketNotFound},
		{name: "post ticket", method: "POST", path: "/tickets/" + bTicket, body: `{}`, status: 405, code: codeMethodNotAllowed},

		// internal: validate_eta
		{name: "validate unknown client", internal: true, method: "POST", path: "/validate_eta", body: `{"client_id":"no-such-client","ticket_type":"GOLD"}`, status: 404, code: codeClientNotFound, mention: "client_id"},
		{name: "validate malformed client", internal: true, method: "POST", path: "/validate_eta", body: `{"client_id":"A.B","ticket_type":"GOLD"}`, status: 400, code: codeInvalidField, mention: "client_id"},
		{name: "validate bad type", internal: true, method: "POST", path: "/validate_eta", body: `{"client_id":"` + a.id + `","ticket_type":"Gold"}`, status: 400, code: codeInvalidField, mention: "ticket_type"},
		{name: "validate unknown field", internal: true, method: "POST", path: "/validate_eta", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD","slot_id":"x"}`, status: 400, code: codeUnknownField, mention: "slot_id"},

		// internal: allocate_slot
		{name: "allocate malformed slot", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD","slot_id":"tomorrow"}`, status: 400, code: codeInvalidField, mention: "slot_id"},
		{name: "allocate slot with dots", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD","slot_id":"202601010000-a.b-aaaaaaaaaaaa"}`, status: 400, code: codeInvalidField, mention: "slot_id"},
		{name: "allocate never issued", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD","slot_id":"202601010000-agent-aaaaaaaaaaaa"}`, status: 410, code: codeHoldExpired, mention: "slot_id"},
		{name: "allocate unknown client", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"no-such-client","ticket_type":"GOLD","slot_id":"202601010000-agent-aaaaaaaaaaaa"}`, status: 404, code: codeClientNotFound, mention: "client_id"},
		{name: "allocate missing slot", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"` + a.id + `","ticket_type":"GOLD"}`, status: 400, code: codeInvalidField, mention: "slot_id"},
		{name: "allocate bad type", internal: true, method: "POST", path: "/allocate_slot", body: `{"client_id":"` + a.id + `","ticket_type":"SILVER ","slot_id":"202601010000-agent-aaaaaaaaaaaa"}`, status: 400, code: codeInvalidField, mention: "ticket_type"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				req := request{method: tt.method, path: tt.path, header: tt.header, contentType: tt.contentType, body: tt.body}
				h := e.handler
				if tt.internal {
					h = e.internal
				} else if !tt.noToken {
					req.token = a.token
				}
				resp := doOn(t, h, req)
				if resp.status != tt.status || resp.body["status"] != "error" || resp.body["error"] != tt.code {
					t.Fatalf("%d %s, want %d %s", resp.status, resp.raw, tt.status, tt.code)
				}
				if msg, _ := resp.body["message"].(string); msg == "" || !strings.Contains(msg, tt.mention) {
					t.Errorf("message %q does not mention %q", msg, tt.mention)
				}
			})
		}
	})
	if n := e.slotRecords(t, a.id); n != aBase {
		t.Errorf("slot records of a: %d -> %d", aBase, n)
	}
	if n := e.slotRecords(t, b.id); n != bBase {
		t.Errorf("slot records of b: %d -> %d", bBase, n)
	}
	if n := len(e.slotKeys(t, a.id)); n != aSlots {
		t.Errorf("slot keys of a: %d -> %d", aSlots, n)
	}
	if n := len(e.slotKeys(t, b.id)); n != bSlots {
		t.Errorf("slot keys of b: %d -> %d", bSlots, n)
	}
	if keys := e.idempotencyKeys(t, a.id); len(keys) != 0 {
		t.Errorf("idempotency keys of a: %v", keys)
	}
	if _, err := e.row(t, b.id, bTicket); !errors.Is(err, tenants.ErrTicketNotFound) {
		t.Errorf("b's ticket in its database without a worker: %v", err)
	}
	if got := e.getTicket(t, b, bTicket); got.body["status"] != "accepted" {
		t.Errorf("b's ticket after a's attempts: %s", got.raw)
	}
}

// TestNoResponderIs503: without a responder the answer is an immediate
// 503 with Retry-After, and nothing is left behind: a request no responder
// received wrote nothing, so the Idempotency-Key is forgotten at once.
func TestNoResponderIs503(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config(func(context.Context) error { return nil })
	e.withAdmission(&cfg, admission.Config{ETATimeout: 500 * time.Millisecond})
	public, err := NewPublic(cfg)
	if err != nil {
		t.Fatalf("NewPublic: %v", err)
	}
	internal, err := NewInternal(cfg)
	if err != nil {
		t.Fatalf("NewInternal: %v", err)
	}
	e.handler = public
	a := e.openAccount(t, "Aperture", "ops@aperture.example")

	resp := e.do(t, request{method: "POST", path: "/create_ticket", token: a.token, header: http.Header{"Idempotency-Key": {"k"}},
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})})
	if resp.status != http.StatusServiceUnavailable || resp.body["error"] != codeUnavailable || resp.header.Get("Retry-After") == "" {
		t.Errorf("create_ticket: %d %s %v", resp.status, resp.raw, resp.header)
	}
	hold := doOn(t, internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Gold})})
	if hold.status != http.StatusServiceUnavailable || hold.header.Get("Retry-After") == "" {
		t.Errorf("validate_eta: %d %s", hold.status, hold.raw)
	}
	te := &ticketEnv{env: e}
	if keys := te.idempotencyKeys(t, a.id); len(keys) != 0 {
		t.Errorf("idempotency keys %v after a 503", keys)
	}
	if n := te.slotRecords(t, a.id); n != 0 {
		t.Errorf("%d slot records after a 503", n)
	}
}
