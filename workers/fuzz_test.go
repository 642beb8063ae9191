package workers_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
)

// FuzzETARequest sends arbitrary subjects and bodies to Handle of a real
// responder (embedded NATS, real tenants with one agent each), one env for
// every input. No panic; only the protocol's codes, never a 5xx; a refusal
// (400, 404, 409, 410) writes nothing to the slot buckets.
//
// Placeholders let the fuzzer reach past the tenant check: {a} and {b} are
// the tenants, {ag} a's agent, {now} the responder's clock, {s} a slot id
// a holds, {n} a ticket nonce, {tk} a ticket id of {ag} at {now}.
func FuzzETARequest(f *testing.F) {
	for _, seed := range []struct{ subject, body string }{
		{"tms.eta.{a}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}"}`},
		{"tms.eta.{a}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}","takeover":true}`},
		{"tms.eta.{a}", `{"op":"hold","tenant":"{a}","type":"SILVER","created_at":"{now}"}`},
		{"tms.eta.{a}", `{"op":"confirm","tenant":"{a}","type":"BRONZE","slot_id":"{s}","nonce":"{n}"}`},
		{"tms.eta.{b}", `{"op":"confirm","tenant":"{b}","type":"BRONZE","slot_id":"{s}","nonce":"{n}"}`},
		{"tms.eta.{a}", `{"op":"release","tenant":"{a}","ticket":"{tk}","type":"GOLD","created_at":"{now}","agent":"{ag}","slot_time":"{now}"}`},
		{"tms.eta.{a}", `{"op":"release","tenant":"{a}","nonce":"{n}"}`},
		{"tms.eta.{b}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}"}`},
		{"tms.eta.{a}", `{"OP":"reserve","Tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}"}`},
		{"tms.eta.{a}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}","nonce":"T.>"}`},
		{"tms.eta.{a}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}","ticket":"{tk}"}`},
		{"tms.eta.{a}", `{"op":"release","tenant":"{a}","ticket":"{tk}","type":"GOLD","created_at":"{now}","agent":"{ag}","slot_time":"0000-01-01T00:00:00Z"}`},
		{"tms.eta.{a}", `{"op":"release","tenant":"{a}","ticket":"t1","agent":"{ag}","slot_time":"{now}"}`},
		{"tms.eta.{a}", `{"op":"reserve","tenant":"{a}","type":"GOLD","created_at":"{now}","nonce":"{n}","agents_rev":1}`},
		{"tms.eta.*", `{}`},
		{"tms.eta.{a}", "{\"op\":\"hold\",\"tenant\":\"{a}\",\"type\":\"GOLD\xff\",\"created_at\":\"{now}\"}"},
	} {
		f.Add(seed.subject, []byte(seed.body))
	}

	e := newRespEnv(f)
	a, b := e.account(f, "Fuzz A"), e.account(f, "Fuzz B")
	agent := e.agentAt(f, a, respT0)
	e.agentAt(f, b, respT0)
	// Holds outlive a fuzzing run: an expiry would move the bucket.
	r := e.responder(f, func(c *workers.ResponderConfig) { c.HoldTTL = time.Hour })
	ctx := testkit.Context(f, time.Hour)
	testkit.Eventually(f, 10*time.Second, func() bool {
		first, last := respT0, respT0.Add(2*time.Hour-time.Minute)
		return r.FreeSlots(a.ID, first, last) > 0 && r.FreeSlots(b.ID, first, last) > 0
	}, "the responder to see the agents")
	hold := r.Handle(ctx, subjects.ETA(a.ID), []byte(`{"op":"hold","tenant":"`+a.ID+`","type":"BRONZE","created_at":"`+
		respT0.Format(time.RFC3339Nano)+`"}`))
	if hold.Code != http.StatusOK {
		f.Fatalf("hold: %+v", hold)
	}
	nonce := subjects.NewTicketNonce()
	ticket, err := subjects.NewSlotTicketID(agent.ID, respT0, nonce)
	if err != nil {
		f.Fatal(err)
	}
	expand := strings.NewReplacer("{a}", a.ID, "{b}", b.ID, "{ag}", agent.ID, "{now}", respT0.Format(time.RFC3339Nano),
		"{s}", hold.SlotID, "{n}", nonce, "{tk}", ticket)

	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		subject, data = expand.Replace(subject), []byte(expand.Replace(string(data)))
		before := e.slotSeqs(t, a.ID, b.ID)
		reply := r.Handle(ctx, subject, data)
		switch reply.Code {
		case http.StatusOK, http.StatusCreated:
			if err := reply.Err(); err != nil {
				t.Fatalf("%s %q: success %+v, yet Err() = %v", subject, data, reply, err)
			}
			return
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusGone:
		default:
			t.Fatalf("%s %q: code %d %+v", subject, data, reply.Code, reply)
		}
		if reply.Error == "" || reply.Message == "" {
			t.Fatalf("%s %q: refusal %+v without error code or message", subject, data, reply)
		}
		if err := reply.Err(); err == nil || errors.Is(err, subjects.ErrETAProtocol) {
			t.Fatalf("%s %q: refusal %+v outside the subjects contract: Err() = %v", subject, data, reply, err)
		}
		if after := e.slotSeqs(t, a.ID, b.ID); after != before {
			t.Fatalf("%s %q: refused with %+v, yet the slot buckets moved %v -> %v", subject, data, reply, before, after)
		}
	})
}

// slotSeqs are the last sequences of the two tenants' slot bucket
// streams: every create, update, purge or expiry moves them.
func (e *respEnv) slotSeqs(t testing.TB, tenantA, tenantB string) [2]uint64 {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	var seqs [2]uint64
	for i, tenant := range []string{tenantA, tenantB} {
		name := "KV_" + subjects.SlotBucket(subjects.SlotShard(tenant, subjects.DefaultSlotShards))
		st, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		seqs[i] = info.State.LastSeq
	}
	return seqs
}
