package workers

import (
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/workers/calendar"
)

// Fuzz targets for the decoders that read what others wrote: the
// allocator's ticket events, and the agent and slot entries the
// responder's KV watches deliver (anyone with access to a bucket can
// write there). The ETA request decoder is fuzzed through Handle on a
// real responder in fuzz_test.go.

// fuzzT0 is a whole minute; watch-fed calendars are built around it.
var fuzzT0 = time.Date(2030, 5, 6, 10, 0, 0, 0, time.UTC)

// entry is a KV watch entry as the library delivers it.
type entry struct {
	key   string
	value []byte
	rev   uint64
	op    jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return "fuzz" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return fuzzT0 }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

// watchResponder is a responder with nothing but its calendars, which is
// all the watch sinks touch.
func watchResponder() *Responder {
	return &Responder{log: slog.New(slog.DiscardHandler), now: func() time.Time { return fuzzT0 }, nShards: 1,
		tenants: map[string]*tenantCalendar{}, loaded: make([]atomic.Bool, 2)}
}

func fuzzOp(op uint8) jetstream.KeyValueOp {
	return []jetstream.KeyValueOp{jetstream.KeyValuePut, jetstream.KeyValueDelete, jetstream.KeyValuePurge}[op%3]
}

// checkCalendars fails unless every calendar the sinks created belongs to
// a valid tenant id (it later goes into keys and subjects) and answers.
func checkCalendars(t *testing.T, r *Responder) {
	t.Helper()
	for tenant, tc := range r.tenants {
		if err := subjects.ValidID(tenant); err != nil {
			t.Fatalf("a calendar for tenant %q: %v", tenant, err)
		}
		first, last, _ := calendar.Window(fuzzT0, subjects.Gold)
		tc.cal.Free(fuzzT0, first, last)
		if p, ok := tc.cal.Place(fuzzT0, first, last); ok {
			for _, cl := range p.Claims {
				if subjects.ValidID(cl.Agent) != nil {
					t.Fatalf("claim %+v with a bad agent", cl)
				}
				_ = subjects.SlotKey(tenant, cl.Agent, cl.Minute)
				tc.cal.Abandon(cl)
			}
			if cl := p.Claims[0]; cl.Minute.Before(first) || cl.Minute.After(last) {
				t.Fatalf("placement %+v outside [%v, %v]", cl, first, last)
			}
		}
	}
}

// FuzzAgentRecord feeds an arbitrary agents-bucket entry to the agent
// watch, as a live update and as a snapshot: no panic, calendars only for
// valid ids, and a record is used only if it matches its key, has a known
// status and, to count as available, a start.
func FuzzAgentRecord(f *testing.F) {
	since := fuzzT0.Add(-time.Hour)
	rec, _ := json.Marshal(subjects.AgentRecord{Tenant: "ctenant", ID: "aagent", Name: "n",
		Status: subjects.AgentAvailable, AvailableSince: &since, UpdatedAt: since})
	f.Add("ctenant.aagent", rec, uint8(0))
	f.Add("ctenant.aagent", rec, uint8(1))
	f.Add("ctenant.other", rec, uint8(0))
	f.Add("ctenant.aagent", []byte(`{"tenant":"ctenant","id":"aagent","status":"available"}`), uint8(0))
	f.Add("ctenant.aagent", []byte(`{"tenant":"ctenant","id":"aagent","status":"available","available_since":"0001-01-01T00:00:00Z"}`), uint8(0))
	f.Add("ctenant.aagent", []byte(`{"tenant":"ctenant","id":"aagent","status":"AVAILABLE","available_since":"2030-05-06T09:00:00Z"}`), uint8(0))
	f.Add("c.*.>", []byte(`null`), uint8(2))

	f.Fuzz(func(t *testing.T, key string, value []byte, op uint8) {
		e := entry{key: key, value: value, rev: 1, op: fuzzOp(op)}
		r := watchResponder()
		if tenant, ag, ok := r.agentOf(e); ok {
			var got subjects.AgentRecord
			if err := json.Unmarshal(value, &got); err != nil {
				t.Fatalf("used a record that does not decode: %v", err)
			}
			if key != got.Tenant+"."+got.ID || tenant != got.Tenant || ag.ID != got.ID ||
				subjects.ValidID(tenant) != nil || subjects.ValidID(ag.ID) != nil {
				t.Fatalf("key %q used as tenant %q agent %q (record %+v)", key, tenant, ag.ID, got)
			}
			if got.Status != subjects.AgentAvailable && got.Status != subjects.AgentUnavailable {
				t.Fatalf("used status %q", got.Status)
			}
			if ag.Available && (got.Status != subjects.AgentAvailable || got.AvailableSince == nil) {
				t.Fatalf("available without an available status and a start: %+v", got)
			}
		}
		sink := r.agentSink()
		sink.snapshot([]jetstream.KeyValueEntry{e})
		checkCalendars(t, r)
		sink.update(e)
		checkCalendars(t, r)
	})
}

// FuzzSlotEntry feeds an arbitrary slot-bucket entry to the shard watch,
// as a live update and as a snapshot: no panic, calendars only for valid
// tenants, and the minute is free only where the entry is a record that
// DecodeSlotRecord accepts and that frees it (released), or a marker; a
// record that does not decode keeps it busy. For a record that decodes,
// the window judged from its created_at obeys the SLA rule.
func FuzzSlotEntry(f *testing.F) {
	ticket, _ := subjects.NewSlotTicketID("aagent", fuzzT0, "abcdefghijklmnop")
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "ctenant", Ticket: ticket, Type: subjects.Gold,
		Agent: "aagent", SlotTime: fuzzT0, CreatedAt: fuzzT0, Deadline: fuzzT0.Add(2 * time.Hour)}
	confirmed, _ := json.Marshal(subjects.ConfirmedRecord(ev, 0))
	released, _ := json.Marshal(subjects.ReleasedRecord(ev, fuzzT0, 1))
	expires := fuzzT0.Add(30 * time.Second)
	held, _ := json.Marshal(subjects.SlotRecord{State: subjects.SlotHeld, Tenant: "ctenant", Agent: "aagent",
		SlotTime: fuzzT0, Type: subjects.Gold, CreatedAt: fuzzT0, Nonce: "abcdefghijkl", HoldExpiresAt: &expires})
	const key = "ctenant.aagent.203005061000"
	f.Add(key, confirmed, uint64(1), uint8(0))
	f.Add(key, released, uint64(2), uint8(0))
	f.Add(key, held, uint64(3), uint8(0))
	f.Add(key, confirmed, uint64(1), uint8(1))
	f.Add("ctenant.aagent.203005061001", confirmed, uint64(1), uint8(0)) // a ticket of another minute
	f.Add("ctenant.aagent.999912312359", []byte(`{"state":"held","type":"BRONZE","created_at":"9999-12-31T23:59:59Z","nonce":"x"}`), uint64(7), uint8(0))
	f.Add("ctenant.aagent.000001010000", []byte(`{"state":"held","type":"SILVER","created_at":"0000-01-01T00:00:00Z"}`), uint64(0), uint8(2))
	f.Add(key, []byte(`{"state":"held","type":"SILVER","created_at":"2030-05-06T10:00:00Z"}`), uint64(4), uint8(0))
	f.Add(key, []byte(`{"state":"released"}`), uint64(5), uint8(0))
	f.Add("ctenant.aagent.203013011000", []byte(`{}`), uint64(1), uint8(0))
	f.Add("ctenant.aagent.203005061000.x", []byte(`{}`), uint64(1), uint8(0))

	f.Fuzz(func(t *testing.T, key string, value []byte, rev uint64, op uint8) {
		e := entry{key: key, value: value, rev: rev, op: fuzzOp(op)}
		r := watchResponder()
		// An agent that is available everywhere makes the slot count.
		r.calendar("ctenant").cal.SetAgent(calendar.Agent{ID: "aagent", Available: true, Since: fuzzT0.Add(-24 * time.Hour)})
		sink := r.shardSink(0)
		sink.update(e)
		rec, decodeErr := subjects.DecodeSlotRecord(key, value, subjects.CheckNames)
		if tenant, agent, minute, err := subjects.ParseSlotKey(key); err == nil {
			s := calendar.Slot{Agent: agent, Minute: minute}
			cal := r.calendar(tenant).cal
			if got := cal.Rev(s); got == rev && rev > 0 { // applied (inside the calendar's range)
				wantFree := e.op != jetstream.KeyValuePut || (decodeErr == nil && rec.State == subjects.SlotReleased)
				if cal.Reserved(s) == wantFree {
					t.Fatalf("entry %q = %q (%v): reserved %v, want %v (decode: %v)", key, value, e.op,
						cal.Reserved(s), !wantFree, decodeErr)
				}
			}
		}
		checkCalendars(t, r)
		sink.snapshot([]jetstream.KeyValueEntry{e})
		checkCalendars(t, r)

		if decodeErr != nil {
			return // confirm and release treat it as no hold, nothing to release
		}
		first, last, ok := calendar.Window(rec.CreatedAt, rec.Type)
		if !ok {
			return
		}
		sla, _ := subjects.SLA(rec.Type)
		c := rec.CreatedAt.UTC()
		if first.Before(c) || last.Add(time.Minute).After(c.Add(sla)) || last.Before(first) ||
			!first.Equal(first.Truncate(time.Minute)) || !last.Equal(last.Truncate(time.Minute)) {
			t.Fatalf("window [%v, %v] for %s created %v breaks the SLA rule", first, last, rec.Type, c)
		}
	})
}
