package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"tms/subjects"
	"tms/tenants"
)

// The allocator's decisions, without NATS or Postgres: every way a
// delivery, a tenant look-up and a write's outcome can turn out.

var (
	decCreated = time.Date(2030, 5, 6, 10, 0, 30, 0, time.UTC)
	decStored  = time.Date(2030, 5, 6, 10, 5, 0, 0, time.FixedZone("x", 3600))
)

const decSubject = "tms.tickets.ctenant.tticket"

// decEvent is a valid created event of ctenant's ticket tticket, changed by
// each edit.
func decEvent(edits ...func(*subjects.TicketEvent)) subjects.TicketEvent {
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "ctenant", Ticket: "tticket", Type: subjects.Gold,
		Agent: "aagent", SlotTime: decCreated.Truncate(time.Minute).Add(time.Minute), CreatedAt: decCreated,
		Deadline: decCreated.Add(2 * time.Hour)}
	for _, edit := range edits {
		edit(&ev)
	}
	return ev
}

// decJSON is ev as the ingress encodes it.
func decJSON(t *testing.T, ev subjects.TicketEvent) []byte {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return data
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
	case got.tenant != want.tenant || got.ticket != want.ticket:
		t.Fatalf("tenant %q ticket %q, want %q %q", got.tenant, got.ticket, want.tenant, want.ticket)
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
	}
	g, w := got.ev, want.ev
	if g.Event != w.Event || g.Tenant != w.Tenant || g.Ticket != w.Ticket || g.Type != w.Type || g.Agent != w.Agent ||
		!g.SlotTime.Equal(w.SlotTime) || !g.CreatedAt.Equal(w.CreatedAt) || !g.Deadline.Equal(w.Deadline) ||
		(g.CancelledAt == nil) != (w.CancelledAt == nil) || (g.CancelledAt != nil && !g.CancelledAt.Equal(*w.CancelledAt)) {
		t.Fatalf("event %+v, want %+v", g, w)
	}
}

// TestDecide: what each delivery asks for. A subject that names no ticket
// and every check of the body are dead letters of kind invalid (with the
// subject's tenant and ticket when it names them); a valid event is a
// create or a cancel, a cancel without cancelled_at dated by the stream.
func TestDecide(t *testing.T) {
	t.Parallel()
	invalid := func(reason string) decision {
		return decision{action: actDeadLetter, tenant: "ctenant", ticket: "tticket", kind: kindInvalid, reason: reason}
	}
	stored := decStored.UTC()
	cancelledAt := decCreated.Add(10 * time.Minute)
	cases := []struct {
		name    string
		subject string
		data    []byte
		want    decision
	}{
		{name: "subject of another stream", subject: "tms.eta.ctenant", data: decJSON(t, decEvent()),
			want: decision{action: actDeadLetter, kind: kindInvalid, reason: "subject: "}},
		{name: "subject without a ticket", subject: "tms.tickets.ctenant", data: decJSON(t, decEvent()),
			want: decision{action: actDeadLetter, kind: kindInvalid, reason: "subject: "}},
		{name: "subject with a wildcard", subject: "tms.tickets.c*.tticket", data: decJSON(t, decEvent()),
			want: decision{action: actDeadLetter, kind: kindInvalid, reason: "subject: "}},
		{name: "subject with a token too many", subject: decSubject + ".x", data: decJSON(t, decEvent()),
			want: decision{action: actDeadLetter, kind: kindInvalid, reason: "subject: "}},
		{name: "oversize body", subject: decSubject, data: []byte(`{"event":"` + strings.Repeat("x", allocMaxEventBytes) + `"}`),
			want: invalid(fmt.Sprintf("at most %d", allocMaxEventBytes))},
		{name: "not JSON", subject: decSubject, data: []byte(`{"event":`), want: invalid("json: ")},
		{name: "empty body", subject: decSubject, data: nil, want: invalid("json: ")},
		{name: "unknown field", subject: decSubject,
			data: []byte(strings.Replace(string(decJSON(t, decEvent())), `{`, `{"extra":1,`, 1)),
			want: invalid(`unknown field "extra"`)},
		{name: "data after the object", subject: decSubject, data: append(decJSON(t, decEvent()), []byte(` {}`)...),
			want: invalid("data after the JSON object")},
		{name: "unknown event", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Event = "updated" })), want: invalid(`event "updated"`)},
		{name: "body tenant differs from the subject's", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Tenant = "other" })),
			want: invalid(`body tenant "other" differs from the subject's "ctenant"`)},
		{name: "body ticket differs from the subject's", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Ticket = "other" })),
			want: invalid(`body ticket "other" differs from the subject's "tticket"`)},
		{name: "unknown ticket type", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Type = "PLATINUM" })), want: invalid(`ticket type "PLATINUM"`)},
		{name: "invalid agent id", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Agent = "a.b" })), want: invalid(`agent id "a.b"`)},
		{name: "no created_at", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.CreatedAt = time.Time{} })), want: invalid("no created_at")},
		{name: "slot_time not a whole minute", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = ev.SlotTime.Add(time.Second) })),
			want: invalid("is not a whole minute")},
		{name: "no slot_time", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = time.Time{} })), want: invalid("is not a whole minute")},
		{name: "deadline not created_at + SLA", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Deadline = ev.Deadline.Add(time.Minute) })),
			want: invalid("is not created_at + 2h0m0s")},
		{name: "slot before created_at", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = decCreated.Truncate(time.Minute) })),
			want: invalid("outside the window")},
		{name: "slot ending after the deadline", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = ev.Deadline.Truncate(time.Minute) })),
			want: invalid("outside the window")},
		{name: "created with cancelled_at", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.CancelledAt = &cancelledAt })),
			want: invalid("a created event with cancelled_at")},
		{name: "created", subject: decSubject, data: decJSON(t, decEvent()),
			want: decision{action: actCreate, tenant: "ctenant", ticket: "tticket", ev: decEvent()}},
		{name: "created in the last minute of its window", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = ev.Deadline.Truncate(time.Minute).Add(-time.Minute) })),
			want: decision{action: actCreate, tenant: "ctenant", ticket: "tticket",
				ev: decEvent(func(ev *subjects.TicketEvent) { ev.SlotTime = ev.Deadline.Truncate(time.Minute).Add(-time.Minute) })}},
		{name: "cancelled, dated by the stream", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Event = subjects.TicketCancelled })),
			want: decision{action: actCancel, tenant: "ctenant", ticket: "tticket", ev: decEvent(func(ev *subjects.TicketEvent) {
				ev.Event, ev.CancelledAt = subjects.TicketCancelled, &stored
			})}},
		{name: "cancelled with its own date", subject: decSubject,
			data: decJSON(t, decEvent(func(ev *subjects.TicketEvent) { ev.Event, ev.CancelledAt = subjects.TicketCancelled, &cancelledAt })),
			want: decision{action: actCancel, tenant: "ctenant", ticket: "tticket", ev: decEvent(func(ev *subjects.TicketEvent) {
				ev.Event, ev.CancelledAt = subjects.TicketCancelled, &cancelledAt
			})}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := decide(delivery{subject: c.subject, data: c.data, seq: 7, delivered: 2, stored: decStored})
			checkDecision(t, got, c.want)
			if got.action == actDeadLetter && c.want.tenant != "" && !strings.HasPrefix(got.reason, ErrInvalidEvent.Error()+": ") {
				t.Fatalf("reason %q does not start with %q", got.reason, ErrInvalidEvent)
			}
			if got.writes() != (c.want.action == actCreate || c.want.action == actCancel) {
				t.Fatalf("writes() = %v for %s", got.writes(), got.action)
			}
			if got.action == actCancel && got.ev.CancelledAt.Location() != time.UTC {
				t.Fatalf("cancelled_at %v, want it in UTC", got.ev.CancelledAt)
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
	write := decision{action: actCreate, tenant: "ctenant", ticket: "tticket", ev: decEvent()}
	down := fmt.Errorf("reading tenant ctenant: %w", errors.New("nats: timeout"))
	cases := []struct {
		name string
		err  error
		want decision
	}{
		{name: "found", err: nil, want: write},
		{name: "unknown tenant", err: fmt.Errorf("tenant ctenant: %w", tenants.ErrTenantNotFound),
			want: decision{action: actDeadLetter, tenant: "ctenant", ticket: "tticket", ev: decEvent(), kind: kindUnknownTenant,
				reason: "unknown tenant ctenant"}},
		{name: "registry unreachable", err: down,
			want: decision{action: actRedeliver, tenant: "ctenant", ticket: "tticket", ev: decEvent(), kind: retryRegistry,
				err: down, delay: 3 * time.Second}},
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
	write := decision{action: actCreate, tenant: "ctenant", ticket: "tticket", ev: decEvent()}
	cancel := decision{action: actCancel, tenant: "ctenant", ticket: "tticket",
		ev: decEvent(func(ev *subjects.TicketEvent) { ev.Event, ev.CancelledAt = subjects.TicketCancelled, &decCreated })}
	unavailable := fmt.Errorf("apply created ticket tticket: %w: connection refused", tenants.ErrUnavailable)
	holderUnreadable := fmt.Errorf("reading the latest event of ticket hholder: %w: %w", tenants.ErrUnavailable,
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
		{name: "database unreachable", write: write, err: unavailable, delivered: 4,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, unavailable, 4*time.Second
			})},
		{name: "database unreachable, never dead-lettered", write: write, err: unavailable, delivered: 1000,
			want: with(write, func(d *decision) {
				d.action, d.kind, d.err, d.delay = actRedeliver, retryUnavailable, unavailable, 1000*time.Second
			})},
		{name: "holder's event unreadable", write: write, err: holderUnreadable, delivered: 2,
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
