package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/ops/testkit"
	"tms/subjects"
)

// FuzzNATSAPI sends arbitrary requests through the NATS API's real
// dispatch (registry, ETA responder, slot buckets, idempotency bucket)
// for one env shared by every input. Whatever the subject, body and
// Idempotency-Key: no panic, no 5xx, a reply that is one JSON object with
// "code", and a refusal writes nothing (no slot record, no idempotency
// key).
//
// Subjects and bodies may name the env's real ids through placeholders,
// so that the fuzzer reaches past the tenant lookup: {a} and {b} are the
// two tenants, {t} a ticket of a, {s} a slot id a holds.
func FuzzNATSAPI(f *testing.F) {
	for _, seed := range []struct{ subject, body, key string }{
		{"tms.api.{a}.create_ticket", `{"client_id":"{a}","ticket_type":"GOLD"}`, ""},
		{"tms.api.{a}.create_ticket", `{"client_id":"{a}","ticket_type":"SILVER"}`, "fuzz-key-1"},
		{"tms.api.{a}.create_ticket", `{"client_id":"{b}","ticket_type":"GOLD"}`, ""},
		{"tms.api.{a}.create_ticket", `{"client_id":"{a}","ticket_type":"GOLD","subject":"s","description":"d\n"}`, ""},
		{"tms.api.{a}.create_ticket", `{"client_id":"{a}","ticket_type":"GOLD","subject":"\udc00","description":null}`, "fuzz-key-2"},
		{"tms.api.{a}.allocate_slot", `{"client_id":"{a}","ticket_type":"GOLD","slot_id":"{s}","description":"\u0000"}`, ""},
		{"tms.api.{b}.cancel_ticket", `{"ticket_id":"{t}"}`, ""},
		{"tms.api.{a}.get_ticket", `{"ticket_id":"{t}"}`, ""},
		{"tms.api.{a}.validate_eta", `{"client_id":"{a}","ticket_type":"BRONZE"}`, ""},
		{"tms.api.{a}.allocate_slot", `{"client_id":"{a}","ticket_type":"GOLD","slot_id":"{s}"}`, ""},
		{"tms.api.{b}.allocate_slot", `{"client_id":"{b}","ticket_type":"GOLD","slot_id":"{s}"}`, ""},
		{"tms.api.*.create_ticket", `{}`, ""},
		{"tms.api.{a}", `{}`, ""},
	} {
		f.Add(seed.subject, []byte(seed.body), seed.key)
	}

	e := newTicketEnv(f, ticketEnvOptions{holdTTL: time.Hour}) // no hold expires during a run
	a, _ := e.tenantWithAgent(f, "Fuzz Alpha", "ops@fuzz-alpha.example")
	b, _ := e.tenantWithAgent(f, "Fuzz Beta", "ops@fuzz-beta.example")
	ticket := e.createWhenReady(f, a, subjects.Silver)["ticket_id"].(string)
	hold := doOn(f, e.internal, request{method: "POST", path: "/validate_eta",
		body: jsonBody(map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze})})
	if hold.status != http.StatusOK {
		f.Fatalf("validate_eta: %d %s", hold.status, hold.raw)
	}
	expand := strings.NewReplacer("{a}", a.id, "{b}", b.id, "{t}", ticket, "{s}", hold.body["slot_id"].(string))

	f.Fuzz(func(t *testing.T, subject string, data []byte, idemKey string) {
		msg := &nats.Msg{Subject: expand.Replace(subject), Data: []byte(expand.Replace(string(data)))}
		if idemKey != "" {
			msg.Header = nats.Header{idempotencyHeader: {idemKey}}
		}
		before := e.writes(t, a.id, b.id)
		ctx, cancel := context.WithTimeout(context.Background(), natsRequestTimeout)
		defer cancel()
		ans, err := e.natsAPI.dispatch(ctx, msg)
		status, body := ans.status, ans.body
		if err != nil {
			ae := toAPIError(err)
			status, body = ae.status, ae.body()
		}
		if status < 200 || status >= 500 {
			t.Fatalf("%s %q: answered %d %+v (err %v)", msg.Subject, msg.Data, status, body, err)
		}
		var reply map[string]any
		if jerr := json.Unmarshal(natsReply(status, body), &reply); jerr != nil || reply["code"] != float64(status) {
			t.Fatalf("%s %q: reply %v (%v) does not carry code %d", msg.Subject, msg.Data, reply, jerr, status)
		}
		if status >= 300 {
			if after := e.writes(t, a.id, b.id); !after.within(before) {
				t.Fatalf("%s %q: refused with %d %+v, yet wrote:\nbefore %+v\nafter  %+v",
					msg.Subject, msg.Data, status, body, before, after)
			}
		}
	})
}

// writeMarks are what a request could have written: the last sequences
// of the tenants' slot bucket streams (every record a responder writes
// moves them: a ticket, a hold, a cancel), and the tenants' idempotency
// keys.
type writeMarks struct {
	seqs []uint64
	idem []string
}

// within reports that nothing was written between w and later.
func (w writeMarks) within(earlier writeMarks) bool {
	if !slices.Equal(w.seqs, earlier.seqs) {
		return false
	}
	for _, k := range w.idem {
		if !slices.Contains(earlier.idem, k) {
			return false
		}
	}
	return true
}

// writes reads the env's write marks for the given tenants.
func (e *ticketEnv) writes(t testing.TB, tenantIDs ...string) writeMarks {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	var streams []string
	for _, id := range tenantIDs {
		streams = append(streams, subjects.SlotStream(subjects.SlotShard(id, subjects.DefaultSlotShards)))
	}
	var w writeMarks
	for _, name := range streams {
		st, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		w.seqs = append(w.seqs, info.State.LastSeq)
	}
	for _, id := range tenantIDs {
		w.idem = append(w.idem, e.idempotencyKeys(t, id)...)
	}
	return w
}
