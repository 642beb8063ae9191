package tenants_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// ticketEnv is one tenant with one agent, the ticket store, and a
// superuser connection to the tenant's database to look behind it.
type ticketEnv struct {
	ten     tenants.Tenant
	agent   string
	tickets *tenants.Tickets
	agents  *tenants.Agents
	db      *pgx.Conn
}

func newTicketEnv(t testing.TB) *ticketEnv {
	t.Helper()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	ten := e.createAccount(t, "Tickets", "tickets@tickets.example")
	ag, err := e.Agents().Create(ctx, ten, "Ann")
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, testkit.DatabaseURL(t, testkit.PostgresURL(), ten.DBName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = db.Close(cctx)
	})
	return &ticketEnv{ten: ten, agent: ag.ID, tickets: e.Tickets, agents: e.Agents(), db: db}
}

var ticketsT0 = time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.UTC)

// event is a GOLD ticket created at ticketsT0 in the slot minutes after
// the first whole minute.
func (e *ticketEnv) event(kind, id string, minutes int) subjects.TicketEvent {
	slot := ticketsT0.Truncate(time.Minute).Add(time.Duration(minutes+1) * time.Minute)
	ev := subjects.TicketEvent{Event: kind, Tenant: e.ten.ID, Ticket: id, Type: subjects.Gold, Agent: e.agent,
		SlotTime: slot, CreatedAt: ticketsT0, Deadline: ticketsT0.Add(2 * time.Hour)}
	if kind == subjects.TicketCancelled {
		at := ticketsT0.Add(time.Duration(minutes+1) * time.Second)
		ev.CancelledAt = &at
	}
	return ev
}

// slotState is the slots row of the event's minute: "" when absent.
func (e *ticketEnv) slotState(t *testing.T, ev subjects.TicketEvent) string {
	t.Helper()
	var state string
	err := e.db.QueryRow(testkit.Context(t, 10*time.Second),
		`SELECT available::text FROM slots WHERE sa_id = $1 AND time = $2`, ev.Agent, ev.SlotTime).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return state
}

func (e *ticketEnv) count(t *testing.T, id string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(testkit.Context(t, 10*time.Second), `SELECT count(*) FROM tickets WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *ticketEnv) mustGet(t *testing.T, id, status string) tenants.TicketRow {
	t.Helper()
	row, err := e.tickets.Get(testkit.Context(t, 10*time.Second), e.ten, id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	if row.Status != status {
		t.Fatalf("ticket %s is %s, want %s", id, row.Status, status)
	}
	return row
}

func TestTickets(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)

	t.Run("create is idempotent", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		ev := e.event(subjects.TicketCreated, "t-create", 0)
		for range 3 {
			if err := e.tickets.ApplyCreated(ctx, e.ten, ev); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.count(t, ev.Ticket); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		row := e.mustGet(t, ev.Ticket, subjects.StatusAllocated)
		want := tenants.TicketRow{ID: ev.Ticket, Type: ev.Type, Status: subjects.StatusAllocated, Agent: ev.Agent,
			SlotTime: ev.SlotTime, CreatedAt: ev.CreatedAt, Deadline: ev.Deadline}
		if row.ID != want.ID || row.Type != want.Type || row.Agent != want.Agent || !row.SlotTime.Equal(want.SlotTime) ||
			!row.CreatedAt.Equal(want.CreatedAt) || !row.Deadline.Equal(want.Deadline) || row.CancelledAt != nil {
			t.Errorf("Get = %+v, want %+v", row, want)
		}
		if s := e.slotState(t, ev); s != "unavailable" {
			t.Errorf("slot is %q, want unavailable", s)
		}
	})

	t.Run("cancel before create wins", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		cancel := e.event(subjects.TicketCancelled, "t-early-cancel", 1)
		if err := e.tickets.ApplyCancelled(ctx, e.ten, cancel); err != nil {
			t.Fatal(err)
		}
		row := e.mustGet(t, cancel.Ticket, subjects.StatusCancelled)
		if row.CancelledAt == nil || !row.CancelledAt.Equal(*cancel.CancelledAt) || !row.SlotTime.Equal(cancel.SlotTime) {
			t.Errorf("Get = %+v", row)
		}
		if err := e.tickets.ApplyCreated(ctx, e.ten, e.event(subjects.TicketCreated, cancel.Ticket, 1)); err != nil {
			t.Fatal(err)
		}
		e.mustGet(t, cancel.Ticket, subjects.StatusCancelled)
		if s := e.slotState(t, cancel); s != "available" {
			t.Errorf("slot is %q, want available", s)
		}
	})

	t.Run("cancel after create frees the slot once", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		created := e.event(subjects.TicketCreated, "t-late-cancel", 2)
		if err := e.tickets.ApplyCreated(ctx, e.ten, created); err != nil {
			t.Fatal(err)
		}
		first := e.event(subjects.TicketCancelled, created.Ticket, 2)
		if err := e.tickets.ApplyCancelled(ctx, e.ten, first); err != nil {
			t.Fatal(err)
		}
		again := first
		later := first.CancelledAt.Add(time.Hour)
		again.CancelledAt = &later
		if err := e.tickets.ApplyCancelled(ctx, e.ten, again); err != nil {
			t.Fatal(err)
		}
		if err := e.tickets.ApplyCreated(ctx, e.ten, created); err != nil {
			t.Fatal(err)
		}
		row := e.mustGet(t, created.Ticket, subjects.StatusCancelled)
		if row.CancelledAt == nil || !row.CancelledAt.Equal(*first.CancelledAt) {
			t.Errorf("cancelled_at = %v, want the first cancel's %v", row.CancelledAt, first.CancelledAt)
		}
		if s := e.slotState(t, created); s != "available" {
			t.Errorf("slot is %q, want available", s)
		}
	})

	t.Run("conflict names the live ticket; a cancelled slot is taken again", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		a := e.event(subjects.TicketCreated, "t-holder", 3)
		if err := e.tickets.ApplyCreated(ctx, e.ten, a); err != nil {
			t.Fatal(err)
		}
		b := e.event(subjects.TicketCreated, "t-second", 3)
		err := e.tickets.ApplyCreated(ctx, e.ten, b)
		var conflict *tenants.SlotConflictError
		if !errors.As(err, &conflict) || conflict.Ticket != a.Ticket || !errors.Is(err, tenants.ErrSlotTaken) {
			t.Fatalf("second create on a taken minute: %v, want a SlotConflictError naming %s", err, a.Ticket)
		}
		if _, err := e.tickets.Get(ctx, e.ten, b.Ticket); !errors.Is(err, tenants.ErrTicketNotFound) {
			t.Fatalf("refused ticket was written: %v", err)
		}
		if err := e.tickets.ApplyCancelled(ctx, e.ten, e.event(subjects.TicketCancelled, a.Ticket, 3)); err != nil {
			t.Fatal(err)
		}
		if s := e.slotState(t, a); s != "available" {
			t.Errorf("slot after cancel is %q, want available", s)
		}
		if err := e.tickets.ApplyCreated(ctx, e.ten, b); err != nil {
			t.Fatalf("create on a freed minute: %v", err)
		}
		e.mustGet(t, a.Ticket, subjects.StatusCancelled)
		e.mustGet(t, b.Ticket, subjects.StatusAllocated)
		if s := e.slotState(t, b); s != "unavailable" {
			t.Errorf("slot after retake is %q, want unavailable", s)
		}
		// A late repeat of the old holder's cancel must not free B's minute.
		if err := e.tickets.ApplyCancelled(ctx, e.ten, e.event(subjects.TicketCancelled, a.Ticket, 3)); err != nil {
			t.Fatal(err)
		}
		if s := e.slotState(t, b); s != "unavailable" {
			t.Errorf("slot after a repeated old cancel is %q, want unavailable", s)
		}
	})

	t.Run("a cancel frees the written ticket's own minute", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		created := e.event(subjects.TicketCreated, "t-moved", 5)
		if err := e.tickets.ApplyCreated(ctx, e.ten, created); err != nil {
			t.Fatal(err)
		}
		wrong := e.event(subjects.TicketCancelled, created.Ticket, 6) // names another minute
		if err := e.tickets.ApplyCancelled(ctx, e.ten, wrong); err != nil {
			t.Fatal(err)
		}
		row := e.mustGet(t, created.Ticket, subjects.StatusCancelled)
		if !row.SlotTime.Equal(created.SlotTime) {
			t.Errorf("cancel moved the ticket to %v", row.SlotTime)
		}
		if s := e.slotState(t, created); s != "available" {
			t.Errorf("the ticket's own minute is %q, want available", s)
		}
	})

	t.Run("bad events and ids", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		if _, err := e.tickets.Get(ctx, e.ten, "nope"); !errors.Is(err, tenants.ErrTicketNotFound) {
			t.Errorf("Get(unknown) = %v", err)
		}
		if _, err := e.tickets.Get(ctx, e.ten, "a.b"); !errors.Is(err, tenants.ErrTicketNotFound) {
			t.Errorf("Get(bad id) = %v", err)
		}
		unknown := e.event(subjects.TicketCreated, "t-ghost-agent", 7)
		unknown.Agent = "aghost"
		if err := e.tickets.ApplyCreated(ctx, e.ten, unknown); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Errorf("unknown agent: %v, want ErrInvalidTicket", err)
		}
		partial := e.event(subjects.TicketCreated, "t-partial", 7)
		partial.SlotTime = partial.SlotTime.Add(time.Second)
		if err := e.tickets.ApplyCreated(ctx, e.ten, partial); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Errorf("slot inside a minute: %v, want ErrInvalidTicket", err)
		}
		badType := e.event(subjects.TicketCancelled, "t-bad-type", 7)
		badType.Type = "gold"
		if err := e.tickets.ApplyCancelled(ctx, e.ten, badType); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Errorf("bad type: %v, want ErrInvalidTicket", err)
		}
		for _, id := range []string{unknown.Ticket, partial.Ticket, badType.Ticket} {
			if n := e.count(t, id); n != 0 {
				t.Errorf("refused ticket %s was written", id)
			}
		}
	})
}

// TestTicketsUnavailable: a tenant database that refuses connections is
// ErrUnavailable (the allocator retries those forever), and writes work
// again once it accepts them.
func TestTicketsUnavailable(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	restore := testkit.RefuseConnections(t, e.ten.DBName)
	ev := e.event(subjects.TicketCreated, "t-outage", 0)
	for range 2 { // a pooled connection killed under us, then a refused dial
		if err := e.tickets.ApplyCreated(ctx, e.ten, ev); !errors.Is(err, tenants.ErrUnavailable) {
			t.Fatalf("create during outage: %v, want ErrUnavailable", err)
		}
	}
	if _, err := e.tickets.Get(ctx, e.ten, ev.Ticket); !errors.Is(err, tenants.ErrUnavailable) {
		t.Fatalf("get during outage: %v, want ErrUnavailable", err)
	}
	restore()
	testkit.Eventually(t, 20*time.Second, func() bool {
		return e.tickets.ApplyCreated(ctx, e.ten, ev) == nil
	}, "create after the outage")
	e2 := e.mustGet(t, ev.Ticket, subjects.StatusAllocated)
	if !e2.SlotTime.Equal(ev.SlotTime) {
		t.Errorf("Get = %+v", e2)
	}
}
