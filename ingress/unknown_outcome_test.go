package ingress

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/subjects"
)

// scriptedResponder stands in for the ETA responders of one tenant, a
// real NATS peer on the real subject: it hands every request to the test
// and answers as answer says for its operation, or not at all (the reply
// is lost: the asker's outcome is unknown).
type scriptedResponder struct {
	got chan subjects.ETARequest
	mu  sync.Mutex
	// answer gives the reply to a request of an operation; nil: none.
	answer map[string]*subjects.ETAReply
}

func newScriptedResponder(t *testing.T, e *ticketEnv, tenant string) *scriptedResponder {
	t.Helper()
	r := &scriptedResponder{got: make(chan subjects.ETARequest, 16), answer: map[string]*subjects.ETAReply{}}
	nc := e.nats.Connect(t)
	sub, err := nc.Subscribe(subjects.ETA(tenant), func(m *nats.Msg) {
		var req subjects.ETARequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("ETA request %q: %v", m.Data, err)
		}
		r.got <- req
		r.mu.Lock()
		reply := r.answer[req.Op]
		r.mu.Unlock()
		if reply != nil {
			data, _ := json.Marshal(reply)
			_ = m.Respond(data)
		}
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// answers sets the reply to op's requests (nil: none).
func (r *scriptedResponder) answers(op string, reply *subjects.ETAReply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer[op] = reply
}

// next is the next request the responder got.
func (r *scriptedResponder) next(t *testing.T) subjects.ETARequest {
	t.Helper()
	return nextRequest(t, r.got)
}

// none checks that no request arrived beyond those taken: call it once
// the admission under test has answered (every request it sends is sent
// before its answer).
func (r *scriptedResponder) none(t *testing.T) {
	t.Helper()
	select {
	case req := <-r.got:
		t.Errorf("unexpected ETA request %+v", req)
	default:
	}
}

var released = &subjects.ETAReply{Code: subjects.ETAOK}

func refusal(code string) *subjects.ETAReply {
	r := subjects.ETARefusal(code, "", "scripted")
	return &r
}

// TestUnknownOutcomeReleasesTheNonce: a reserve or a confirm that gets no
// reply, or a responder that could not finish, may have written its
// ticket: admission answers 503 and asks the responders to release the
// ticket of the request's nonce (a release with the nonce and no ticket
// id). An Idempotency-Key's claim is forgotten once that release is
// answered; without an answer it stays pending, its nonce fixed, for a
// takeover to settle.
func TestUnknownOutcomeReleasesTheNonce(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: 300 * time.Millisecond})
	a := e.openAccount(t, "Lossy", "ops@lossy.example")
	r := newScriptedResponder(t, e, a.id)
	r.answers(subjects.ETARelease, released)

	want503 := func(what string, resp response) {
		t.Helper()
		if resp.status != http.StatusServiceUnavailable || resp.body["error"] != codeUnavailable || resp.header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d %s %v, want 503 unavailable", what, resp.status, resp.raw, resp.header)
		}
	}
	wantRelease := func(what string, nonce string) {
		t.Helper()
		rel := r.next(t)
		if rel.Op != subjects.ETARelease || rel.Tenant != a.id || rel.Nonce != nonce || rel.Ticket != "" {
			t.Fatalf("%s: then %+v, want a release of nonce %s", what, rel, nonce)
		}
	}
	reserve := func(what string, takeover bool) subjects.ETARequest {
		t.Helper()
		req := r.next(t)
		if req.Op != subjects.ETAReserve || req.Ticket != "" || subjects.ValidTicketNonce(req.Nonce) != nil || req.Takeover != takeover {
			t.Fatalf("%s: %+v, want a reserve with a nonce (takeover %v)", what, req, takeover)
		}
		return req
	}

	// No reply to the reserve.
	want503("create, reserve lost", e.create(t, a, subjects.Gold, nil))
	wantRelease("create, reserve lost", reserve("create", false).Nonce)
	r.none(t)

	want503("keyed create, reserve lost", e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"lost"}}))
	wantRelease("keyed create, reserve lost", reserve("keyed create", false).Nonce)
	r.none(t)
	if keys := e.idempotencyKeys(t, a.id); len(keys) != 0 {
		t.Errorf("the claim outlived its answered release: %v", keys)
	}

	// A responder that could not finish: its write may have landed.
	r.answers(subjects.ETAReserve, refusal(subjects.ETACodeUnavailable))
	want503("create, responder unavailable", e.create(t, a, subjects.Gold, nil))
	wantRelease("create, responder unavailable", reserve("create", false).Nonce)
	r.none(t)

	// A rejection wrote nothing: nothing to release.
	r.answers(subjects.ETAReserve, refusal(subjects.ETACodeNoSlot))
	if resp := e.create(t, a, subjects.Gold, nil); resp.status != http.StatusConflict {
		t.Fatalf("create, no slot: %d %s", resp.status, resp.raw)
	}
	reserve("create, no slot", false)
	r.none(t)

	// Neither the reserve nor the release answered: the claim stays
	// pending with its nonce.
	r.answers(subjects.ETAReserve, nil)
	r.answers(subjects.ETARelease, nil)
	want503("keyed create, all lost", e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"lost-twice"}}))
	nonce := reserve("keyed create, all lost", false).Nonce
	wantRelease("keyed create, all lost", nonce)
	r.none(t)
	if rec := e.record(t, a, "lost-twice"); rec.State != subjects.IdempotencyPending || rec.Nonce != nonce || rec.Ticket != "" {
		t.Errorf("record after an unanswered release: %+v, want pending with nonce %s", rec, nonce)
	}

	// No reply to a confirm: the ticket it would have made is released.
	r.answers(subjects.ETARelease, released)
	slotID := subjects.FormatSlotID("agent1", time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC), subjects.NewHoldNonce())
	want503("allocate, confirm lost", e.internalDo(t, "/allocate_slot",
		map[string]string{"client_id": a.id, "ticket_type": subjects.Gold, "slot_id": slotID}))
	confirm := r.next(t)
	if confirm.Op != subjects.ETAConfirm || confirm.SlotID != slotID || subjects.ValidTicketNonce(confirm.Nonce) != nil {
		t.Fatalf("allocate: %+v, want a confirm of %s with a nonce", confirm, slotID)
	}
	wantRelease("allocate, confirm lost", confirm.Nonce)
	r.none(t)
}

// TestTakeoverWithoutReplyReleasesNothing: a takeover's reserve that gets
// no reply may concern the dead twin's ticket, whose 201 may have gone
// out: nothing is released, and the claim stays pending (taken over, with
// the twin's nonce) for the next retry.
func TestTakeoverWithoutReplyReleasesNothing(t *testing.T) {
	t.Parallel()
	const eta = 300 * time.Millisecond
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: eta})
	a := e.openAccount(t, "Lossy Takeover", "ops@lossy-takeover.example")
	r := newScriptedResponder(t, e, a.id)
	r.answers(subjects.ETARelease, released)
	nonce := subjects.NewTicketNonce()
	claimed := e.clock.Now().Add(-idemTakeoverAfter(eta) - time.Second)
	e.pendingRecord(t, a, "dead-twin", subjects.IdempotencyRecord{Nonce: nonce}, claimed)

	resp := e.create(t, a, subjects.Gold, http.Header{"Idempotency-Key": {"dead-twin"}})
	if resp.status != http.StatusServiceUnavailable || resp.body["error"] != codeUnavailable {
		t.Fatalf("takeover, reserve lost: %d %s", resp.status, resp.raw)
	}
	if req := r.next(t); req.Op != subjects.ETAReserve || !req.Takeover || req.Nonce != nonce {
		t.Fatalf("takeover: %+v, want a reserve with Takeover and the twin's nonce %s", req, nonce)
	}
	r.none(t)
	rec := e.record(t, a, "dead-twin")
	if rec.State != subjects.IdempotencyPending || rec.Nonce != nonce || !rec.Created.After(claimed) {
		t.Errorf("record after the lost takeover: %+v, want pending, nonce %s, taken over after %v", rec, nonce, claimed)
	}
}
