package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/subjects"
	"tms/tenants"
)

// The allocator's decisions, without NATS or Postgres: every way a
// delivery, a tenant look-up and a write's outcome can turn out.

var (
	decCreated = time.Date(2030, 5, 6, 10, 0, 30, 0, time.UTC)
	// decMinute is the slot of decKey, the first minute of decCreated's
	// window.
	decMinute  = decCreated.Truncate(time.Minute).Add(time.Minute)
	decKey     = subjects.SlotKey("ctenant", "aagent", decMinute)
	decSubject = "$KV." + subjects.SlotBucket(0) + "." + decKey
	decTicket  = mustSlotTicket("aagent", decMinute, "abcdefghijklmnop")
)

// mustSlotTicket is subjects.NewSlotTicketID for ids known to be good.
func mustSlotTicket(agent string, minute time.Time, nonce string) string {
	id, err := subjects.NewSlotTicketID(agent, minute, nonce)
	if err != nil {
		panic(err)
	}
	return id
}

// decEvent is a valid created event of ctenant's ticket decTicket, in
// decKey's slot, changed by each edit.
func decEvent(edits ...func(*subjects.TicketEvent)) subjects.TicketEvent {
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "ctenant", Ticket: decTicket, Type: subjects.Gold,
		Agent: "aagent", SlotTime: decMinute, CreatedAt: decCreated, Deadline: decCreated.Add(2 * time.Hour)}
	for _, edit := range edits {
		edit(&ev)
	}
	return ev
}

// decCancelled is decEvent's cancel at decCreated + 10 minutes.
func decCancelled() subjects.TicketEvent {
	at := subjects.Stamp(decCreated.Add(10 * time.Minute))
	return decEvent(func(ev *subjects.TicketEvent) { ev.Event, ev.CancelledAt = subjects.TicketCancelled, &at })
}

// decJSON is a slot record as the responder encodes it.
func decJSON(t *testing.T, rec subjects.SlotRecord) []byte {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// decConfirmed is the confirmed record of decEvent (replacing revision
// 3), changed by each edit.
func decConfirmed(edits ...func(*subjects.SlotRecord)) subjects.SlotRecord {
	rec := subjects.ConfirmedRecord(decEvent(), 3)
	for _, edit := range edits {
		edit(&rec)
	}
	return rec
}

// decBackoff makes the delivery count a delay was computed from visible:
// n seconds for delivery n.
func decBackoff(n int) time.Duration { return time.Duration(n) * time.Second }

// checkDecision fails unless got is want; reasons are compared by
// substring (want.reason is a part of got.reason) and events by instant.
func checkDecision(t *testing.T, got, want decision) {
	t.Helper()
	switch {
	case got.action != want.action:
		t.Fatalf("action %s, want %s (decision %+v)", got.action, want.action, got)
	case got.record != want.record:
		t.Fatalf("record %q, want %q", got.record, want.record)
	case got.key != want.key || got.tenant != want.tenant || got.ticket != want.ticket:
		t.Fatalf("key %q tenant %q ticket %q, want %q %q %q", got.key, got.tenant, got.ticket, want.key, want.tenant, want.ticket)
	case got.prev != want.prev:
		t.Fatalf("prev %d, want %d", got.prev, want.prev)
	case got.kind != want.kind:
		t.Fatalf("kind %q, want %q", got.kind, want.kind)
	case !strings.Contains(got.reason, want.reason) || (want.reason == "") != (got.reason == ""):
		t.Fatalf("reason %q, want one with %q", got.reason, want.reason)
	case got.err != want.err:
		t.Fatalf("err %v, want %v", got.err, want.err)
	case got.delay != want.delay:
		t.Fatalf("delay %s, want %s", got.delay, want.delay)
	case got.holder != want.holder || got.tries != want.tries:
		t.Fatalf("holder %q tries %d, want %q %d", got.holder, got.tries, want.holder, want.tries)
	case got.forget != want.forget:
		t.Fatalf("forget %v, want %v", got.forget, want.forget)
	case got.moves != want.moves:
		t.Fatalf("moves %d, want %d", got.moves, want.moves)
	case (got.moved == nil) != (want.moved == nil) || (got.moved != nil && (got.moved.Ticket != want.moved.Ticket ||
		got.moved.Agent != want.moved.Agent || !got.moved.SlotTime.Equal(want.moved.SlotTime))):
		t.Fatalf("moved %+v, want %+v", got.moved, want.moved)
	}
	g, w := got.ev, want.ev
	if g.Event != w.Event || g.Tenant != w.Tenant || g.Ticket != w.Ticket || g.Type != w.Type || g.Agent != w.Agent ||
		!g.SlotTime.Equal(w.SlotTime) || !g.CreatedAt.Equal(w.CreatedAt) || !g.Deadline.Equal(w.Deadline) ||
		(g.CancelledAt == nil) != (w.CancelledAt == nil) || (g.CancelledAt != nil && !g.CancelledAt.Equal(*w.CancelledAt)) {
		t.Fatalf("event %+v, want %+v", g, w)
	}
}

// TestDecide: what each record asks for. A subject that is not of the
// delivering shard's bucket, a key that is no slot key, a delete marker
// and every check of subjects.DecodeSlotRecord are dead letters of kind
// invalid (with the key's tenant, and the ticket when the body names one
// that parses); a confirmed record is its ticket's create, a released one
// its cancel; a hold and a minute freed without a ticket are acked with
// nothing to write.
func TestDecide(t *testing.T) {
	t.Parallel()
	invalid := func(ticket, reason string) decision {
		return decision{action: actDeadLetter, key: decKey, tenant: "ctenant", ticket: ticket, kind: kindInvalid, reason: reason}
	}
	badSubject := decision{action: actDeadLetter, kind: kindInvalid, reason: "subject: "}
	badKey := decision{action: actDeadLetter, kind: kindInvalid, reason: "key: "}
	good := decJSON(t, decConfirmed())
	otherMinute := mustSlotTicket("aagent", decMinute.Add(time.Minute), "abcdefghijklmnop")
	expires := decCreated.Add(time.Minute)
	released := subjects.ReleasedRecord(decEvent(), *decCancelled().CancelledAt, 9)
	delMarker := nats.Header{}
	delMarker.Set("KV-Operation", "DEL")
	cases := []struct {
		name    string
		subject string
		header  nats.Header
		data    []byte
		want    decision
	}{
		{name: "subject of another stream", subject: "tms.tickets.ctenant.tticket", data: good, want: badSubject},
		{name: "subject of another bucket", subject: "$KV.TMS_AGENTS.ctenant.aagent", data: good, want: badSubject},
		{name: "subject of another shard", subject: "$KV." + subjects.SlotBucket(1) + "." + decKey, data: good, want: badSubject},
		{name: "subject without a key", subject: "$KV." + subjects.SlotBucket(0), data: good, want: badSubject},
		{name: "key without a minute", subject: "$KV." + subjects.SlotBucket(0) + ".ctenant.aagent", data: good, want: badKey},
		{name: "key with a token too many", subject: decSubject + ".x", data: good, want: badKey},
		{name: "key with a bad minute", subject: "$KV." + subjects.SlotBucket(0) + ".ctenant.aagent.203013011000", data: good,
			want: badKey},
		{name: "key with a wildcard tenant", subject: "$KV." + subjects.SlotBucket(0) + ".c*.aagent.203005061001", data: good,
			want: badKey},
		{name: "delete marker", subject: decSubject, header: delMarker, want: invalid("", "a DEL marker")},
		{name: "oversize body", subject: decSubject,
			data: []byte(`{"ticket":"` + decTicket + `","state":"` + strings.Repeat("x", subjects.MaxSlotRecordBytes) + `"}`),
			want: invalid(decTicket, fmt.Sprintf("at most %d", subjects.MaxSlotRecordBytes))},
		{name: "not JSON", subject: decSubject, data: []byte(`{"state":`), want: invalid("", "json: ")},
		{name: "empty body", subject: decSubject, data: nil, want: invalid("", "json: ")},
		{name: "unknown field", subject: decSubject, data: []byte(strings.Replace(string(good), `{`, `{"extra":1,`, 1)),
			want: invalid(decTicket, `unknown field "extra"`)},
		{name: "data after the object", subject: decSubject, data: append(append([]byte(nil), good...), []byte(` {}`)...),
			want: invalid(decTicket, "data after the JSON object")},
		{name: "unknown state", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.State = "deleted" })), want: invalid(decTicket, `state "deleted"`)},
		{name: "body tenant differs from the key's", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Tenant = "other" })), want: invalid(decTicket, "record of other/")},
		{name: "body agent differs from the key's", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Agent = "bagent" })), want: invalid(decTicket, "/bagent/")},
		{name: "body minute differs from the key's", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.SlotTime = decMinute.Add(time.Minute) })),
			want: invalid(decTicket, "on key")},
		{name: "ticket id of another minute", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Ticket = otherMinute })),
			want: invalid(otherMinute, "does not name the slot")},
		{name: "ticket id of an earlier version", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Ticket = "tabcdefghijklmnopqrst" })),
			want: invalid("", "does not name the slot")},
		{name: "a hold without an expiry", subject: decSubject,
			data: decJSON(t, subjects.SlotRecord{State: subjects.SlotHeld, Type: subjects.Gold, CreatedAt: decCreated}),
			want: invalid("", "a hold without hold_expires_at")},
		{name: "released without cancelled_at", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.State = subjects.SlotReleased })),
			want: invalid(decTicket, "without cancelled_at")},
		{name: "unknown ticket type", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Type = "PLATINUM" })), want: invalid(decTicket, `ticket type "PLATINUM"`)},
		{name: "no created_at", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.CreatedAt = time.Time{} })), want: invalid(decTicket, "no created_at")},
		{name: "deadline not created_at + SLA", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Deadline = r.Deadline.Add(time.Minute) })),
			want: invalid(decTicket, "is not created_at + 2h0m0s")},
		{name: "slot before created_at", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) {
				r.CreatedAt = decMinute.Add(time.Second)
				r.Deadline = r.CreatedAt.Add(2 * time.Hour)
			})), want: invalid(decTicket, "outside the window")},
		{name: "slot ending after the deadline", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) {
				r.CreatedAt = decMinute.Add(-2*time.Hour + 30*time.Second)
				r.Deadline = r.CreatedAt.Add(2 * time.Hour)
			})), want: invalid(decTicket, "outside the window")},
		// subjects.DecodeSlotRecord reads cancelled_at only on a release.
		{name: "confirmed with cancelled_at", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.CancelledAt = decCancelled().CancelledAt })),
			want: decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 3,
				ev: decEvent()}},
		{name: "held", subject: decSubject,
			data: decJSON(t, subjects.SlotRecord{State: subjects.SlotHeld, Type: subjects.Gold, CreatedAt: decCreated, Prev: 2,
				Nonce: "abcdefghijkl", HoldExpiresAt: &expires}),
			want: decision{action: actAck, record: recordHeld, key: decKey, tenant: "ctenant", prev: 2}},
		{name: "freed without a ticket", subject: decSubject,
			data: decJSON(t, subjects.SlotRecord{State: subjects.SlotReleased, Prev: 4}),
			want: decision{action: actAck, record: recordFreed, key: decKey, tenant: "ctenant", prev: 4}},
		{name: "confirmed", subject: decSubject, data: good,
			want: decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 3,
				ev: decEvent()}},
		{name: "confirmed in the last minute of its window", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) {
				r.CreatedAt = decMinute.Add(-2*time.Hour + time.Minute)
				r.Deadline = r.CreatedAt.Add(2 * time.Hour)
			})),
			want: decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 3,
				ev: decEvent(func(ev *subjects.TicketEvent) {
					ev.CreatedAt = decMinute.Add(-2*time.Hour + time.Minute)
					ev.Deadline = ev.CreatedAt.Add(2 * time.Hour)
				})}},
		{name: "released with its ticket", subject: decSubject, data: decJSON(t, released),
			want: decision{action: actCancel, record: recordCancelled, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 9,
				ev: decCancelled()}},
	}
	// A ticket admitted at decMinute + 5 moved (twice) to decKey, and the
	// ticket of decKey that moved away to decMinute + 9 when it came.
	movedTicket := mustSlotTicket("aagent", decMinute.Add(5*time.Minute), "movedmovedmoved1")
	movedEvent := decEvent(func(ev *subjects.TicketEvent) { ev.Ticket = movedTicket })
	away := &subjects.SlotMove{Ticket: decTicket, Agent: "bagent", SlotTime: decMinute.Add(9 * time.Minute)}
	moved := subjects.ConfirmedRecord(movedEvent, 3)
	moved.Moves, moved.Moved = 2, away
	movedCancel := subjects.ReleasedRecord(movedEvent, *decCancelled().CancelledAt, 9)
	movedCancel.Moves = 2
	cancelled := movedEvent
	cancelled.Event, cancelled.CancelledAt = subjects.TicketCancelled, decCancelled().CancelledAt
	cases = append(cases, []struct {
		name    string
		subject string
		header  nats.Header
		data    []byte
		want    decision
	}{
		{name: "a moved ticket's record", subject: decSubject, data: decJSON(t, moved),
			want: decision{action: actMove, record: recordMoved, key: decKey, tenant: "ctenant", ticket: movedTicket, prev: 3,
				moved: away, ev: movedEvent, moves: 2}},
		{name: "a ticket taking the minute of one moved away", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Moved = away })),
			want: decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 3,
				moved: away, ev: decEvent()}},
		{name: "a moved ticket's cancel", subject: decSubject, data: decJSON(t, movedCancel),
			want: decision{action: actCancel, record: recordCancelled, key: decKey, tenant: "ctenant", ticket: movedTicket, prev: 9,
				ev: cancelled, moves: 2}},
		{name: "vacated", subject: decSubject,
			data: decJSON(t, subjects.VacatedRecord(subjects.ConfirmedRecord(decEvent(), 0), "bagent", decMinute.Add(9*time.Minute), 5)),
			want: decision{action: actAck, record: recordVacated, key: decKey, tenant: "ctenant", prev: 5, moved: away}},
		{name: "vacated with a ticket", subject: decSubject,
			data: decJSON(t, func() subjects.SlotRecord {
				r := subjects.VacatedRecord(subjects.ConfirmedRecord(decEvent(), 0), "bagent", decMinute.Add(9*time.Minute), 5)
				r.Ticket = decTicket
				return r
			}()),
			want: invalid(decTicket, "a vacated record needs moved and no ticket")},
		{name: "vacated without moved", subject: decSubject,
			data: decJSON(t, subjects.SlotRecord{State: subjects.SlotVacated, Prev: 5}),
			want: invalid("", "a vacated record needs moved")},
		{name: "negative moves", subject: decSubject,
			data: decJSON(t, decConfirmed(func(r *subjects.SlotRecord) { r.Moves = -1 })),
			want: invalid(decTicket, "moves -1")},
		{name: "a ticket id of another minute and no moves", subject: decSubject,
			data: decJSON(t, func() subjects.SlotRecord { r := moved; r.Moves = 0; return r }()),
			want: invalid(movedTicket, "does not name the slot")},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := decide(delivery{shard: 0, subject: c.subject, header: c.header, data: c.data, seq: 7, delivered: 2})
			checkDecision(t, got, c.want)
			if got.action == actDeadLetter && c.want.tenant != "" && c.header == nil &&
				!strings.HasPrefix(got.reason, subjects.ErrInvalidSlot.Error()+": ") {
				t.Fatalf("reason %q does not start with %q", got.reason, subjects.ErrInvalidSlot)
			}
			if got.writes() != (c.want.action == actCreate || c.want.action == actCancel || c.want.action == actMove) {
				t.Fatalf("writes() = %v for %s", got.writes(), got.action)
			}
		})
	}
}

// TestSettleLookup: an unknown tenant is dead-lettered, a registry that
// cannot answer redelivers after the backoff of the delivery, a tenant
// found keeps the write.
func TestSettleLookup(t *testing.T) {
	t.Parallel()
	d := delivery{subject: decSubject, seq: 7, delivered: 3}
	write := decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent()}
	down := fmt.Errorf("reading tenant ctenant: %w", errors.New("nats: timeout"))
	cases := []struct {
		name string
		err  error
		want decision
	}{
		{name: "found", err: nil, want: write},
		{name: "unknown tenant", err: fmt.Errorf("tenant ctenant: %w", tenants.ErrTenantNotFound),
			want: decision{action: actDeadLetter, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent(),
				kind:   kindUnknownTenant,
				reason: "unknown tenant ctenant"}},
		{name: "registry unreachable", err: down,
			want: decision{action: actRedeliver, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent(),
				kind: retryRegistry,
				err:  down, delay: 3 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkDecision(t, settleLookup(d, write, c.err, decBackoff), c.want)
		})
	}
}

// TestSettleOutcome: what the tenant database's answer means. Written is
// acked; unreachable is redelivered for as long as it takes; an event it
// can never take is dead-lettered; a double booking is redelivered after
// the backoff of the process's tries and dead-lettered at
// allocMaxConflictTries; any other failure is redelivered and
// dead-lettered at allocMaxErrorDeliveries deliveries.
func TestSettleOutcome(t *testing.T) {
	t.Parallel()
	write := decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent()}
	cancel := decision{action: actCancel, record: recordCancelled, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decCancelled()}
	move := decision{action: actMove, record: recordMoved, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent(),
		moves: 2}
	unavailable := fmt.Errorf("apply created ticket tticket: %w: connection refused", tenants.ErrUnavailable)
	holderUnreadable := fmt.Errorf("reading revision 3 of slot %s: %w: %w", decKey, tenants.ErrUnavailable,
		errors.New("nats: timeout"))
	invalidTicket := fmt.Errorf("apply created ticket tticket: %w: unknown agent", tenants.ErrInvalidTicket)
	conflict := fmt.Errorf("apply created ticket tticket of tenant ctenant: %w", &tenants.SlotConflictError{Ticket: "hholder"})
	other := errors.New("apply created ticket tticket: something unexpected")
	with := func(dec decision, edit func(*decision)) decision {
		edit(&dec)
		return dec
	}
	cases := []struct {
		name      string
		write     decision
		err       error
		tries     int
		delivered uint64
		want      decision
	}{
		{name: "created written", write: write, delivered: 1,
			want: with(write, func(d *decision) { d.action, d.forget = actAck, true })},
		{name: "cancel written", write: cancel, delivered: 40,
			want: with(cancel, func(d *decision) { d.action, d.forget = actAck, true })},
		{name: "move written", write: move, delivered: 1,
			want: with(move, func(d *decision) { d.action, d.forget = actAck, true })},
		{name: "move refused as a double booking", write: move, err: conflict, tries: 2, delivered: 3,
			want: with(move, func(d *decision) {
				d.action, d.kind, d.err, d.delay, d.holder, d.tries = actRedeliver, retryConflict, conflict, 2*time.Second, "hholder", 2
			})},
		{name: "move refused as a double booking, last try", write: move, err: conflict, tries: allocMaxConflictTries,
			delivered: 9,
			want: with(move, func(d *decision) {
				d.action, d.kind, d.reason, d.holder, d.tries, d.forget = actDeadLetter, kindDoubleBooking, "held by live ticket hholder",
					"hholder", allocMaxConflictTries, true
			})},
		{name: "move with the database unreachable", write: move, err: unavailable, delivered: 4,
			want: with(move, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, unavailable, 4*time.Second
			})},
		{name: "database unreachable", write: write, err: unavailable, delivered: 4,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, unavailable, 4*time.Second
			})},
		{name: "database unreachable, never dead-lettered", write: write, err: unavailable, delivered: 1000,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, unavailable, 1000*time.Second
			})},
		{name: "holder's release unreadable", write: write, err: holderUnreadable, delivered: 2,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, holderUnreadable, 2*time.Second
			})},
		{name: "refused for good", write: write, err: invalidTicket, delivered: 1,
			want: with(write, func(d *decision) { d.action, d.kind, d.reason = actDeadLetter, kindInvalid, invalidTicket.Error() })},
		{name: "double booking, first try", write: write, err: conflict, tries: 1, delivered: 5,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay, d.holder, d.tries = actRedeliver, retryConflict, conflict, time.Second, "hholder", 1
			})},
		{name: "double booking, last try", write: write, err: conflict, tries: allocMaxConflictTries - 1, delivered: 50,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.holder, d.tries = actRedeliver, retryConflict, conflict, "hholder", allocMaxConflictTries-1
				d.delay = time.Duration(allocMaxConflictTries-1) * time.Second
			})},
		{name: "double booking for good", write: write, err: conflict, tries: allocMaxConflictTries, delivered: 9,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.holder, d.tries, d.forget = actDeadLetter, kindDoubleBooking, "hholder", allocMaxConflictTries, true
				d.reason = "double booking refused by Postgres: agent aagent at 2030-05-06T10:01:00Z is held by live ticket hholder"
			})},
		{name: "unexpected failure", write: write, err: other, delivered: 1,
			want: with(write, func(d *decision) { d.action, d.kind, d.err, d.delay = actRedeliver, retryError, other, time.Second })},
		{name: "unexpected failure, last redelivery", write: write, err: other, delivered: allocMaxErrorDeliveries - 1,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err = actRedeliver, retryError, other
				d.delay = time.Duration(allocMaxErrorDeliveries-1) * time.Second
			})},
		{name: "unexpected failure too often", write: write, err: other, delivered: allocMaxErrorDeliveries,
			want: with(write, func(d *decision) { d.action, d.kind, d.reason = actDeadLetter, kindError, other.Error() })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := delivery{subject: decSubject, seq: 7, delivered: c.delivered}
			checkDecision(t, settleOutcome(d, c.write, c.err, c.tries, decBackoff), c.want)
		})
	}
}

// TestDecideParked: a parked record is decided as its original, which
// must be a slot shard's record at a sequence and of the tenant and
// ticket its parked subject names; anything else is a dead letter of
// kind invalid.
func TestDecideParked(t *testing.T) {
	t.Parallel()
	parked := func(edit func(*delivery)) delivery {
		d := delivery{shard: 0, subject: decSubject, data: decJSON(t, decConfirmed()), seq: 7, delivered: 3,
			parked: true, parkedSubject: subjects.ParkedSubject("ctenant", decTicket), parkedSeq: 11}
		if edit != nil {
			edit(&d)
		}
		return d
	}
	create := decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket,
		prev: 3, ev: decEvent()}
	checkDecision(t, decideParked(parked(nil)), create)

	released := subjects.ReleasedRecord(decEvent(), decCreated.Add(10*time.Minute), 8)
	checkDecision(t, decideParked(parked(func(d *delivery) { d.data = decJSON(t, released) })),
		decision{action: actCancel, record: recordCancelled, key: decKey, tenant: "ctenant", ticket: decTicket,
			prev: 8, ev: decCancelled()})

	invalid := func(reason string) decision {
		return decision{action: actDeadLetter, key: decKey, tenant: "ctenant", ticket: decTicket, prev: 3,
			record: recordCreated, ev: decEvent(), kind: kindInvalid, reason: reason}
	}
	for _, c := range []struct {
		name string
		edit func(*delivery)
		want decision
	}{
		{"no slot shard", func(d *delivery) { d.shard = -1 },
			decision{action: actDeadLetter, kind: kindInvalid, reason: "without a slot subject and sequence"}},
		{"no sequence", func(d *delivery) { d.seq = 0 },
			decision{action: actDeadLetter, kind: kindInvalid, reason: "without a slot subject and sequence"}},
		{"bad parked subject", func(d *delivery) { d.parkedSubject = "tms.parked.ctenant" }, invalid("parked subject")},
		{"another tenant's subject", func(d *delivery) { d.parkedSubject = subjects.ParkedSubject("cother", decTicket) },
			invalid("is of key")},
		{"another ticket's subject", func(d *delivery) {
			d.parkedSubject = subjects.ParkedSubject("ctenant", mustSlotTicket("aagent", decMinute, "qqqqqqqqqqqqqqqq"))
		}, invalid("is of key")},
		{"original invalid", func(d *delivery) { d.data = []byte("{") },
			decision{action: actDeadLetter, key: decKey, tenant: "ctenant", kind: kindInvalid, reason: "invalid slot"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkDecision(t, decideParked(parked(c.edit)), c.want)
		})
	}
}

// TestUnavailableOf: a record of a slot stream whose tenant's database is
// down is parked; a parked one is given back for as long as the tenant
// stays down, whatever its delivery count.
func TestUnavailableOf(t *testing.T) {
	t.Parallel()
	write := decision{action: actCreate, record: recordCreated, key: decKey, tenant: "ctenant", ticket: decTicket, ev: decEvent()}
	down := fmt.Errorf("apply: %w: connection refused", tenants.ErrUnavailable)
	live := delivery{shard: 0, subject: decSubject, seq: 7, delivered: 40}
	want := write
	want.action, want.kind, want.err = actPark, retryUnavailable, down
	checkDecision(t, unavailableOf(live, write, down, 3*time.Second), want)

	parked := live
	parked.parked = true
	want.action, want.delay = actRedeliver, 3*time.Second
	checkDecision(t, unavailableOf(parked, write, down, 3*time.Second), want)
}
