package tenants_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// TestTicketLookup finds tickets in every place they can be, against a
// real TICKETS stream and tenant database: only the stream (accepted),
// only the row, a cancel in the stream, a row cancelled under a create
// still in the stream (the row wins when asked for), nowhere; and it
// refuses what it cannot read.
func TestTicketLookup(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 2*time.Minute)
	ten := e.createAccount(t, "Lookup", "lookup@lookup.example")
	agent, err := e.Agents().Create(ctx, ten, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	rows := e.Tickets
	st, err := e.js.CreateStream(ctx, subjects.TicketsStreamConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	lookup := tenants.TicketLookup{Stream: st, Rows: rows, StreamTimeout: 5 * time.Second, RowTimeout: 5 * time.Second}

	t0 := time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.UTC)
	event := func(kind, id string, minutes int) subjects.TicketEvent {
		ev := subjects.TicketEvent{Event: kind, Tenant: ten.ID, Ticket: id, Type: subjects.Gold, Agent: agent.ID,
			SlotTime: t0.Truncate(time.Minute).Add(time.Duration(minutes+1) * time.Minute), CreatedAt: t0,
			Deadline: t0.Add(2 * time.Hour)}
		if kind == subjects.TicketCancelled {
			at := t0.Add(time.Second)
			ev.CancelledAt = &at
		}
		return ev
	}
	publish := func(t *testing.T, subject string, ev subjects.TicketEvent) {
		t.Helper()
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish on %s: %v", subject, err)
		}
	}
	find := func(t *testing.T, id string, reads tenants.TicketReads) tenants.TicketState {
		t.Helper()
		got, err := lookup.Find(ctx, ten, id, reads)
		if err != nil {
			t.Fatalf("Find(%s): %v", id, err)
		}
		return got
	}
	wantLatest := func(t *testing.T, got tenants.TicketState, want subjects.TicketEvent, status string) {
		t.Helper()
		ev, s, ok := got.Latest()
		if !ok || s != status || ev.Event != want.Event || ev.Ticket != want.Ticket || ev.Agent != want.Agent ||
			!ev.SlotTime.Equal(want.SlotTime) || !ev.CreatedAt.Equal(want.CreatedAt) || !ev.Deadline.Equal(want.Deadline) {
			t.Fatalf("Latest = %+v %q %v, want %+v %q", ev, s, ok, want, status)
		}
	}

	t.Run("only in the stream: accepted, with or without the row", func(t *testing.T) {
		ev := event(subjects.TicketCreated, "t-stream", 0)
		publish(t, subjects.TicketSubject(ten.ID, ev.Ticket), ev)
		for _, reads := range []tenants.TicketReads{0, tenants.ReadRowUnderCreate, tenants.ConfirmAbsence} {
			got := find(t, ev.Ticket, reads)
			if !got.InStream || got.InDB {
				t.Fatalf("reads %b: %+v", reads, got)
			}
			wantLatest(t, got, ev, subjects.StatusAccepted)
		}
	})

	t.Run("only in the database: the row", func(t *testing.T) {
		ev := event(subjects.TicketCreated, "t-row", 1)
		if err := rows.ApplyCreated(ctx, ten, ev); err != nil {
			t.Fatal(err)
		}
		got := find(t, ev.Ticket, tenants.ConfirmAbsence)
		if got.InStream || !got.InDB {
			t.Fatalf("%+v", got)
		}
		wantLatest(t, got, ev, subjects.StatusAllocated)
	})

	t.Run("a cancel in the stream is final; the row is not read", func(t *testing.T) {
		created := event(subjects.TicketCreated, "t-cancel", 2)
		if err := rows.ApplyCreated(ctx, ten, created); err != nil {
			t.Fatal(err)
		}
		cancelled := event(subjects.TicketCancelled, created.Ticket, 2)
		publish(t, subjects.TicketSubject(ten.ID, created.Ticket), cancelled)
		got := find(t, created.Ticket, tenants.ReadRowUnderCreate)
		if !got.InStream || got.InDB {
			t.Fatalf("%+v", got)
		}
		wantLatest(t, got, cancelled, subjects.StatusCancelled)
	})

	t.Run("a row cancelled under a create in the stream wins when read", func(t *testing.T) {
		created := event(subjects.TicketCreated, "t-under", 3)
		publish(t, subjects.TicketSubject(ten.ID, created.Ticket), created)
		cancelled := event(subjects.TicketCancelled, created.Ticket, 3)
		if err := rows.ApplyCancelled(ctx, ten, cancelled); err != nil {
			t.Fatal(err)
		}
		got := find(t, created.Ticket, tenants.ReadRowUnderCreate)
		if !got.InStream || !got.InDB {
			t.Fatalf("%+v", got)
		}
		wantLatest(t, got, cancelled, subjects.StatusCancelled)
		if ev, _, _ := got.Latest(); ev.CancelledAt == nil || !ev.CancelledAt.Equal(*cancelled.CancelledAt) {
			t.Errorf("cancelled_at %v, want %v", ev.CancelledAt, cancelled.CancelledAt)
		}
		// Without asking, the stream's create is what is known.
		got = find(t, created.Ticket, 0)
		if !got.InStream || got.InDB {
			t.Fatalf("without ReadRowUnderCreate: %+v", got)
		}
		wantLatest(t, got, created, subjects.StatusAccepted)
	})

	t.Run("nowhere, confirmed by the leader; an impossible id without a read", func(t *testing.T) {
		for _, id := range []string{"t-nowhere", "not an id", ""} {
			got := find(t, id, tenants.ConfirmAbsence|tenants.ReadRowUnderCreate)
			if _, _, ok := got.Latest(); ok || got.InStream || got.InDB {
				t.Fatalf("%q: %+v", id, got)
			}
		}
	})

	t.Run("a message naming another ticket is an invalid event", func(t *testing.T) {
		ev := event(subjects.TicketCreated, "t-other", 4)
		publish(t, subjects.TicketSubject(ten.ID, "t-misfiled"), ev)
		_, err := lookup.Find(ctx, ten, "t-misfiled", 0)
		if !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Fatalf("Find of a misfiled event: %v, want ErrInvalidTicket", err)
		}
	})

	t.Run("a stream that cannot be read is unavailable", func(t *testing.T) {
		if err := e.js.DeleteStream(ctx, subjects.StreamTickets); err != nil {
			t.Fatal(err)
		}
		short := lookup
		short.StreamTimeout = time.Second
		_, err := short.Find(ctx, ten, "t-stream", 0)
		if !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("Find without the stream: %v, want ErrUnavailable", err)
		}
		if _, err := e.js.Stream(ctx, subjects.StreamTickets); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("stream after delete: %v", err)
		}
	})
}
