package workers

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"tms/subjects"
	"tms/workers/calendar"
)

// checkParkedAgrees: the parked copy of a record is decided as the
// record itself (a record to write is parked under its tenant and
// ticket, and its parked copy read back names the same), and a parked
// record under any other subject is refused.
func checkParkedAgrees(t *testing.T, d delivery, dec decision) {
	t.Helper()
	p := d
	p.parked, p.parkedSeq, p.delivered = true, 9, 4
	p.parkedSubject = "tms.parked.x.y"
	if dec.writes() {
		m := parkedRecord(d, dec)
		p.parkedSubject, p.header = m.Subject, m.Header
	}
	pdec := decideParked(p)
	_ = deadLetterRecord(p, pdec)
	_ = deadLetterID(p)
	switch {
	case !dec.writes() && dec.action != actAck && pdec.action != actDeadLetter:
		t.Fatalf("record dead-lettered, its parked copy decided %s", pdec.action)
	case dec.writes() && (pdec.action != dec.action || pdec.ticket != dec.ticket || pdec.tenant != dec.tenant ||
		pdec.prev != dec.prev):
		t.Fatalf("record decided %+v, its parked copy %+v", dec, pdec)
	case pdec.action == actDeadLetter && pdec.kind != kindInvalid:
		t.Fatalf("parked copy dead-lettered as %q", pdec.kind)
	}
}

// FuzzTicketEvent (the name it had when it fuzzed the TICKETS stream's
// events, whose corpus it keeps): whatever the subject and body of a
// message on a slot shard's stream (anyone with access to a bucket can write a record), the
// allocator's decision never panics, its dead letter can be built, a
// refused record is refused with subjects.ErrInvalidSlot, and a ticket it
// writes is writable as it stands: the key's tenant, agent and minute, a
// ticket id that names that slot, a known type, a whole-minute slot inside
// the SLA window of created_at, deadline = created_at + SLA, cancelled_at
// exactly on a cancel.
func FuzzTicketEvent(f *testing.F) {
	created := time.Date(2030, 5, 6, 10, 0, 30, 0, time.UTC)
	minute := created.Truncate(time.Minute).Add(time.Minute)
	ticket, err := subjects.NewSlotTicketID("aagent", minute, "abcdefghijklmnop")
	if err != nil {
		f.Fatal(err)
	}
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "ctenant", Ticket: ticket, Type: subjects.Gold,
		Agent: "aagent", SlotTime: minute, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
	subject := "$KV." + subjects.SlotBucket(0) + "." + subjects.SlotKey("ctenant", "aagent", minute)
	moved := subjects.ConfirmedRecord(ev, 12)
	moved.Moves = 1
	moved.Ticket, err = subjects.NewSlotTicketID("bagent", minute.Add(3*time.Minute), "abcdefghijklmnop")
	if err != nil {
		f.Fatal(err)
	}
	moved.Moved = &subjects.SlotMove{Ticket: ticket, Agent: "cagent", SlotTime: minute.Add(time.Minute)}
	for _, rec := range []subjects.SlotRecord{
		moved,
		subjects.VacatedRecord(subjects.ConfirmedRecord(ev, 0), "bagent", minute.Add(2*time.Minute), 14),
		subjects.ConfirmedRecord(ev, 0),
		subjects.ConfirmedRecord(ev, 12),
		subjects.ReleasedRecord(ev, created.Add(time.Minute), 13),
		{State: subjects.SlotHeld, Type: subjects.Silver, CreatedAt: created, Nonce: "abcdefghijkl", HoldExpiresAt: &created},
		{State: subjects.SlotReleased, Prev: 4},
	} {
		data, err := json.Marshal(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(subject, data)
	}
	f.Add(subject, []byte(`{"state":"confirmed","tenant":"ctenant","agent":"aagent","slot_time":"2030-05-06T15:31:00+05:30",`+
		`"type":"BRONZE","created_at":"2030-05-06T10:00:59.999999999Z","ticket":"`+ticket+`",`+
		`"deadline":"2030-05-06T18:00:59.999999999Z"}`))
	f.Add(subject, []byte(`{"State":"confirmed","STATE":"released"}`))
	f.Add(subject, []byte(`{"ticket":"`+ticket+`"} {}`))
	f.Add("$KV."+subjects.SlotBucket(0)+".ctenant.aagent.x.y", []byte(`{}`))
	f.Add("$KV."+subjects.SlotBucket(1)+".ctenant.aagent.203005061001", []byte(`{}`))

	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		d := delivery{shard: 0, subject: subject, data: data, seq: 3, delivered: 1}
		dec := decide(d)
		checkParkedAgrees(t, d, dec)
		switch dec.action {
		case actDeadLetter:
			if dec.kind != kindInvalid || dec.reason == "" {
				t.Fatalf("dead letter of kind %q, reason %q", dec.kind, dec.reason)
			}
			_ = deadLetterRecord(d, dec) // builds its subject from the decision's tenant and ticket
			if dec.key != "" {
				if _, err := subjects.DecodeSlotRecord(dec.key, data, subjects.CheckWritable); !errors.Is(err, subjects.ErrInvalidSlot) {
					t.Fatalf("dead-lettered a record refused with %v, not ErrInvalidSlot", err)
				}
			}
			return
		case actAck:
			if dec.record != recordHeld && dec.record != recordFreed && dec.record != recordVacated || dec.ticket != "" ||
				dec.ev.Event != "" {
				t.Fatalf("acked without a write: %+v", dec)
			}
			if dec.record == recordVacated && dec.moved == nil {
				t.Fatalf("vacated without where its ticket went: %+v", dec)
			}
			return
		case actCreate, actCancel, actMove:
		default:
			t.Fatalf("action %s", dec.action)
		}
		tenant, agent, minute, err := subjects.ParseSlotKey(dec.key)
		if err != nil {
			t.Fatalf("writes a record of key %q: %v", dec.key, err)
		}
		ev := dec.ev
		sla, ok := subjects.SLA(ev.Type)
		ta, tm, _, terr := subjects.ParseTicketID(ev.Ticket)
		switch {
		case (dec.action == actCreate || dec.action == actMove) != (ev.Event == subjects.TicketCreated) ||
			(dec.action == actCancel) != (ev.Event == subjects.TicketCancelled):
			t.Fatalf("action %s for event %q", dec.action, ev.Event)
		case dec.moves < 0 || (dec.action == actMove) != (dec.moves > 0 && ev.Event == subjects.TicketCreated):
			t.Fatalf("action %s with %d moves", dec.action, dec.moves)
		case ev.Tenant != tenant || ev.Agent != agent || !ev.SlotTime.Equal(minute) || dec.tenant != tenant:
			t.Fatalf("writes %s/%s/%v from key %q", ev.Tenant, ev.Agent, ev.SlotTime, dec.key)
		case terr != nil || (dec.moves == 0 && (ta != agent || !tm.Equal(minute))) || dec.ticket != ev.Ticket:
			t.Fatalf("writes ticket %q (decision's %q) on key %q: %v", ev.Ticket, dec.ticket, dec.key, terr)
		case subjects.ValidID(ev.Tenant) != nil || subjects.ValidID(ev.Ticket) != nil || subjects.ValidID(ev.Agent) != nil:
			t.Fatalf("writes ids %q %q %q", ev.Tenant, ev.Ticket, ev.Agent)
		case !ok:
			t.Fatalf("writes type %q", ev.Type)
		case ev.CreatedAt.IsZero() || !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
			t.Fatalf("writes created_at %v deadline %v for %s", ev.CreatedAt, ev.Deadline, ev.Type)
		case !ev.SlotTime.UTC().Truncate(time.Minute).Equal(ev.SlotTime):
			t.Fatalf("writes slot_time %v, not a whole minute", ev.SlotTime)
		case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
			t.Fatalf("writes slot_time %v outside [%v, %v - 1m]", ev.SlotTime, ev.CreatedAt, ev.Deadline)
		case (ev.Event == subjects.TicketCancelled) != (ev.CancelledAt != nil):
			t.Fatalf("writes a %s event with cancelled_at %v", ev.Event, ev.CancelledAt)
		}
		if err := ev.CheckRow(); err != nil {
			t.Fatalf("writes an event the database refuses: %v", err)
		}
		// The window rule as the responders apply it agrees.
		first, last, ok := calendar.Window(ev.CreatedAt, ev.Type)
		if m := ev.SlotTime.UTC(); !ok || m.Before(first) || m.After(last) {
			t.Fatalf("slot %v outside the calendar window [%v, %v] (ok %v)", m, first, last, ok)
		}
		// Whatever is written reads back the same after the responder's
		// own encoding of its record.
		rec := subjects.ConfirmedRecord(ev, dec.prev)
		if ev.Event == subjects.TicketCancelled {
			rec = subjects.ReleasedRecord(ev, *ev.CancelledAt, dec.prev)
		}
		rec.Moves, rec.Moved = dec.moves, dec.moved
		again, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("re-encoding an accepted record: %v", err)
		}
		if redo := decide(delivery{shard: 0, subject: subject, data: again}); redo.action != dec.action ||
			redo.ticket != dec.ticket || redo.prev != dec.prev || redo.moves != dec.moves {
			t.Fatalf("accepted %q as %s, its re-encoding %q as %+v", data, dec.action, again, redo)
		}
		_ = subjects.DeadLetterSubject(dec.tenant, dec.ticket)
	})
}
