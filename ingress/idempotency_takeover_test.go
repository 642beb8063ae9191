package ingress

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ingress/admission"
	"tms/ops/testkit"
	"tms/subjects"
)

// crashedTwin writes what a create_ticket under key leaves behind when its
// process dies after the reserve and before its answer is remembered: the
// pending record fixing nonce (stamped at claimed), and the ticket the
// responder admitted for it (created now: the responders refuse an
// instant far from their clock). It returns the responder's reply.
func (e *ticketEnv) crashedTwin(t *testing.T, a account, key, nonce string, claimed time.Time) subjects.ETAReply {
	t.Helper()
	e.pendingRecord(t, a, key, subjects.IdempotencyRecord{Nonce: nonce}, claimed)
	data, err := json.Marshal(subjects.ETARequest{Op: subjects.ETAReserve, Tenant: a.id, Type: subjects.Gold,
		CreatedAt: subjects.Stamp(e.clock.Now()), Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.client.RequestWithContext(testkit.Context(t, 10*time.Second), subjects.ETA(a.id), data)
	if err != nil {
		t.Fatalf("reserve for nonce %s: %v", nonce, err)
	}
	var reply subjects.ETAReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Code != http.StatusCreated {
		t.Fatalf("reserve for nonce %s: %s %v", nonce, msg.Data, err)
	}
	return reply
}

// pendingRecord writes a pending idempotency record as createIdempotent
// claims a key: rec's Nonce (or, as the version before nonces wrote it,
// its Ticket), for a Gold create, stamped at claimed.
func (e *ticketEnv) pendingRecord(t *testing.T, a account, key string, rec subjects.IdempotencyRecord, claimed time.Time) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.CreateOrUpdateKeyValue(ctx, subjects.IdempotencyBucketConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Created, rec.BodyHash = subjects.IdempotencyPending, subjects.Stamp(claimed), admission.RequestHash(a.id, subjects.Gold, admission.Content{})
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, admission.ClaimKey(a.id, key), data, jetstream.KeyTTL(admission.IdempotencyTTL)); err != nil {
		t.Fatalf("pending record: %v", err)
	}
}

// record reads a key's idempotency record.
func (e *ticketEnv) record(t *testing.T, a account, key string) subjects.IdempotencyRecord {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.BucketIdempotency)
	if err != nil {
		t.Fatal(err)
	}
	en, err := kv.Get(ctx, admission.ClaimKey(a.id, key))
	if err != nil {
		t.Fatalf("idempotency record of %q: %v", key, err)
	}
	var rec subjects.IdempotencyRecord
	if err := json.Unmarshal(en.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// staleClaimTime is a claim old enough for its twin to be presumed dead.
func (e *ticketEnv) staleClaimTime() time.Time {
	return e.clock.Now().Add(-idemTakeoverAfter(testETATimeout) - time.Second)
}

// TestIdempotencyTakeoverAnswersTheTwinsTicket: a create_ticket died after
// its reserve and before its answer was remembered. A retry with the same
// key, once the claim is stale, answers the ticket the dead request had
// admitted (found by its nonce), writes nothing new, and remembers it.
func TestIdempotencyTakeoverAnswersTheTwinsTicket(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Vandelay", "ops@vandelay.example")
	e.createWhenReady(t, a, subjects.Gold)
	key := http.Header{"Idempotency-Key": {"crash-after-reserve"}}
	nonce := subjects.NewTicketNonce()
	claimed := e.staleClaimTime()
	twin := e.crashedTwin(t, a, key.Get("Idempotency-Key"), nonce, claimed)
	records := e.slotRecords(t, a.id)

	first := e.create(t, a, subjects.Gold, key)
	created := twin.CreatedAt
	want := map[string]any{"status": "accepted", "ticket_id": twin.Ticket, "ticket_type": subjects.Gold,
		"slot_time": timestamp(twin.SlotTime), "deadline": timestamp(created.Add(2 * time.Hour)), "agent_id": twin.Agent,
		"created_at": timestamp(created)}
	if first.status != http.StatusCreated || !reflect.DeepEqual(first.body, want) {
		t.Fatalf("retry after the crash: %d %s, want 201 %v", first.status, first.raw, want)
	}
	if again := e.create(t, a, subjects.Gold, key); again.status != http.StatusCreated || !reflect.DeepEqual(again.body, want) {
		t.Errorf("same key again: %d %s", again.status, again.raw)
	}
	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("slot records %d -> %d: the takeover wrote", records, n)
	}
	if rec := e.record(t, a, key.Get("Idempotency-Key")); rec.State != subjects.IdempotencyDone || rec.Ticket != twin.Ticket || rec.Nonce != nonce {
		t.Errorf("record after the takeover: %+v", rec)
	}

	// The twin's ticket was cancelled since: the 201 it earned is still
	// the answer, and nothing is admitted anew.
	cancelledTwin := e.crashedTwin(t, a, "crash-then-cancel", subjects.NewTicketNonce(), claimed)
	if r := e.cancel(t, a, cancelledTwin.Ticket); r.status != http.StatusOK {
		t.Fatalf("cancel the twin's ticket: %d %s", r.status, r.raw)
	}
	records = e.slotRecords(t, a.id)
	got := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"crash-then-cancel"}})
	if got.status != http.StatusCreated || got.body["ticket_id"] != cancelledTwin.Ticket {
		t.Fatalf("retry after the twin's ticket was cancelled: %d %s, want 201 for %s", got.status, got.raw, cancelledTwin.Ticket)
	}
	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("slot records %d -> %d: the takeover of a cancelled ticket wrote", records, n)
	}

	// The twin's reserve went unanswered and the twin released its
	// nonce's ticket (a release by nonce) before it died: no client was
	// told of that ticket, so the retry admits a new one, under a fresh
	// nonce (the released ticket's id must not come back).
	nonce = subjects.NewTicketNonce()
	abandoned := e.crashedTwin(t, a, "crash-after-release", nonce, claimed)
	data, err := json.Marshal(subjects.ETARequest{Op: subjects.ETARelease, Tenant: a.id, Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RequestWithContext(testkit.Context(t, 10*time.Second), subjects.ETA(a.id), data); err != nil {
		t.Fatalf("release by nonce: %v", err)
	}
	got = e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"crash-after-release"}})
	id, _ := got.body["ticket_id"].(string)
	_, _, gotNonce, perr := subjects.ParseTicketID(id)
	if got.status != http.StatusCreated || id == abandoned.Ticket || perr != nil || gotNonce == nonce {
		t.Fatalf("retry after the twin released its ticket: %d %s, want 201 for a new ticket with a fresh nonce (not %s)",
			got.status, got.raw, abandoned.Ticket)
	}
	if rec := e.record(t, a, "crash-after-release"); rec.State != subjects.IdempotencyDone || rec.Ticket != id || rec.Nonce != gotNonce {
		t.Errorf("record after the fresh nonce: %+v", rec)
	}
	if again := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"crash-after-release"}}); again.body["ticket_id"] != id {
		t.Errorf("same key again: %d %s, want %s", again.status, again.raw, id)
	}
}

// TestIdempotencyTakeoverAdmitsTheNonceOnce: the dead request's reserve
// wrote nothing. The retry admits a ticket under the nonce the dead
// request had fixed; again gives the same 201; one record.
func TestIdempotencyTakeoverAdmitsTheNonceOnce(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Initech", "ops@initech.example")
	e.createWhenReady(t, a, subjects.Gold)
	key := http.Header{"Idempotency-Key": {"crash-before-reserve"}}
	nonce := subjects.NewTicketNonce()
	e.pendingRecord(t, a, key.Get("Idempotency-Key"), subjects.IdempotencyRecord{Nonce: nonce}, e.staleClaimTime())
	records := e.slotRecords(t, a.id)

	first := e.create(t, a, subjects.Gold, key)
	if first.status != http.StatusCreated {
		t.Fatalf("retry after the crash: %d %s", first.status, first.raw)
	}
	checkAccepted(t, first.body, subjects.Gold, agent)
	id := first.body["ticket_id"].(string)
	if _, _, got, _ := subjects.ParseTicketID(id); got != nonce {
		t.Errorf("ticket %s, want the nonce %s the claim fixed", id, nonce)
	}
	if again := e.create(t, a, subjects.Gold, key); again.status != http.StatusCreated || !reflect.DeepEqual(again.body, first.body) {
		t.Fatalf("same key again: %d %s, want %s", again.status, again.raw, first.raw)
	}
	if n := e.slotRecords(t, a.id); n != records+1 {
		t.Errorf("slot records %d -> %d, want one more", records, n)
	}
	if rec := e.record(t, a, key.Get("Idempotency-Key")); rec.State != subjects.IdempotencyDone || rec.Ticket != id {
		t.Errorf("record after the takeover: %+v", rec)
	}
}

// TestIdempotencyTakeoverOfAnOldRecord: a pending record of the version
// before nonces fixed a whole ticket id. Taken over, it answers that
// ticket if its tenant database has it; otherwise it admits a new ticket
// under a nonce of its own, remembered as any other.
func TestIdempotencyTakeoverOfAnOldRecord(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Oldco", "ops@oldco.example")
	e.createWhenReady(t, a, subjects.Gold)

	// The old ticket reached its database.
	old := e.oldTicket(t, a, agent)
	e.pendingRecord(t, a, "old-written", subjects.IdempotencyRecord{Ticket: old.Ticket}, e.staleClaimTime())
	records := e.slotRecords(t, a.id)
	want := map[string]any{"status": "accepted", "ticket_id": old.Ticket, "ticket_type": old.Type,
		"slot_time": timestamp(old.SlotTime), "deadline": timestamp(old.Deadline), "agent_id": agent,
		"created_at": timestamp(old.CreatedAt)}
	if got := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"old-written"}}); got.status != http.StatusCreated || !reflect.DeepEqual(got.body, want) {
		t.Fatalf("takeover of an old record whose ticket exists: %d %s, want %v", got.status, got.raw, want)
	}
	if n := e.slotRecords(t, a.id); n != records {
		t.Errorf("slot records %d -> %d: the takeover wrote", records, n)
	}

	// The old ticket was never written.
	e.pendingRecord(t, a, "old-lost", subjects.IdempotencyRecord{Ticket: subjects.NewTicketID()}, e.staleClaimTime())
	got := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"old-lost"}})
	if got.status != http.StatusCreated {
		t.Fatalf("takeover of an old record whose ticket is nowhere: %d %s", got.status, got.raw)
	}
	checkAccepted(t, got.body, subjects.Gold, agent)
	rec := e.record(t, a, "old-lost")
	if _, _, nonce, _ := subjects.ParseTicketID(got.body["ticket_id"].(string)); rec.State != subjects.IdempotencyDone ||
		rec.Ticket != got.body["ticket_id"] || rec.Nonce != nonce {
		t.Errorf("record %+v, want done with the new ticket and its nonce", rec)
	}
}

// TestIdempotencyLiveTwinIsNotTakenOver: a pending record younger than the
// takeover bound is a twin still at work: the retry waits for it and then
// answers 409 idempotency_key_in_use, leaving the claim as it was.
func TestIdempotencyLiveTwinIsNotTakenOver(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, _ := e.tenantWithAgent(t, "Globex", "ops@globex.example")
	nonce := subjects.NewTicketNonce()
	e.pendingRecord(t, a, "busy", subjects.IdempotencyRecord{Nonce: nonce}, e.clock.Now())
	resp := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"busy"}})
	if resp.status != http.StatusConflict || resp.body["error"] != codeIdempotencyInUse {
		t.Fatalf("retry while the twin is live: %d %s", resp.status, resp.raw)
	}
	if rec := e.record(t, a, "busy"); rec.State != subjects.IdempotencyPending || rec.Nonce != nonce {
		t.Errorf("record after the retry: %+v, want the twin's pending claim", rec)
	}
	if n := e.slotRecords(t, a.id); n != 0 {
		t.Errorf("%d slot records", n)
	}
}
