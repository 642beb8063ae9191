package tenants_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// TestListTicketsKeysetOrder: pages in (created_at, id) order, ids
// compared bytewise whatever the database's collation (a "-" sorts
// before letters, where a linguistic collation would skip it), each page
// starting strictly after the key it is given, filters applied in the
// query; migration 0003's index exists.
func TestListTicketsKeysetOrder(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	// Three share ticketsT0: only the id orders them.
	ids := []string{"tb", "t-c", "ta", "tz"}
	for i, id := range ids {
		ev := e.event(subjects.TicketCreated, id, i)
		if id == "tz" {
			ev.CreatedAt = ticketsT0.Add(-time.Second) // first of all
		}
		if err := e.tickets.ApplyCreated(ctx, e.ten, ev); err != nil {
			t.Fatalf("ApplyCreated %s: %v", id, err)
		}
	}
	if err := e.tickets.ApplyCancelled(ctx, e.ten, e.event(subjects.TicketCancelled, "ta", 2)); err != nil {
		t.Fatal(err)
	}
	want := []string{"tz", "t-c", "ta", "tb"}

	var got []string
	var after *tenants.TicketKey
	for page := 0; page < 10; page++ {
		rows, more, err := e.tickets.ListTickets(ctx, e.ten, tenants.TicketFilter{}, after, 3)
		if err != nil {
			t.Fatalf("ListTickets: %v", err)
		}
		for _, r := range rows {
			got = append(got, r.ID)
		}
		if more != (len(got) < len(want)) {
			t.Fatalf("page %d ends at %v with more = %v", page, got, more)
		}
		if !more {
			break
		}
		k := rows[len(rows)-1].Key()
		after = &k
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}

	rows, _, err := e.tickets.ListTickets(ctx, e.ten, tenants.TicketFilter{Statuses: []string{subjects.StatusCancelled}}, nil, 10)
	if err != nil || len(rows) != 1 || rows[0].ID != "ta" || rows[0].Status != subjects.StatusCancelled || rows[0].CancelledAt == nil {
		t.Fatalf("cancelled tickets: %+v, %v; want ta alone", rows, err)
	}
	rows, _, err = e.tickets.ListTickets(ctx, e.ten, tenants.TicketFilter{CreatedFrom: ticketsT0, CreatedTo: ticketsT0.Add(time.Microsecond),
		Agent: e.agent, Type: subjects.Gold, Statuses: []string{subjects.StatusAllocated}}, nil, 10)
	if err != nil || len(rows) != 2 || rows[0].ID != "t-c" || rows[1].ID != "tb" {
		t.Fatalf("allocated GOLD tickets created at t0: %+v, %v; want t-c, tb", rows, err)
	}
	rows, _, err = e.tickets.ListTickets(ctx, e.ten, tenants.TicketFilter{Agent: "nobody"}, nil, 10)
	if err != nil || len(rows) != 0 {
		t.Fatalf("tickets of an unknown agent: %+v, %v; want none", rows, err)
	}
	for _, limit := range []int{0, tenants.MaxTicketPage + 1} {
		if _, _, err := e.tickets.ListTickets(ctx, e.ten, tenants.TicketFilter{}, nil, limit); err == nil {
			t.Errorf("ListTickets with limit %d: no error", limit)
		}
	}

	var indexed bool
	if err := e.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = 'tickets'
		AND indexname = 'tickets_created_order')`).Scan(&indexed); err != nil || !indexed {
		t.Fatalf("index tickets_created_order: %v, %v", indexed, err)
	}
}

// TestListTicketsExceptAndRows: Except leaves tickets out of a page (the
// listing answers those from their slot records), TicketRows reads the
// rows of given ids, only the tenant's own, and refuses too many ids.
func TestListTicketsExceptAndRows(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	agents := e.Agents()
	var tens []tenants.Tenant
	for i, name := range []string{"One", "Two"} {
		ten := e.createAccount(t, name, []string{"one@one.example", "two@two.example"}[i])
		ag, err := agents.Create(ctx, ten, "Ann")
		if err != nil {
			t.Fatal(err)
		}
		for j, id := range []string{"ta", "tb", "tc"} {
			slot := ticketsT0.Truncate(time.Minute).Add(time.Duration(j+1) * time.Minute)
			ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: ten.ID, Ticket: id + strings.ToLower(name), Type: subjects.Silver,
				Agent: ag.ID, SlotTime: slot, CreatedAt: ticketsT0, Deadline: ticketsT0.Add(4 * time.Hour)}
			if err := e.Tickets.ApplyCreated(ctx, ten, ev); err != nil {
				t.Fatal(err)
			}
		}
		tens = append(tens, ten)
	}
	rows, more, err := agents.ListTickets(ctx, tens[0], tenants.TicketFilter{Except: []string{"tbone", "tatwo"}}, nil, 1)
	if err != nil || len(rows) != 1 || rows[0].ID != "taone" || !more {
		t.Fatalf("first page without tbone: %+v, %v, %v", rows, more, err)
	}
	k := rows[0].Key()
	rows, more, err = agents.ListTickets(ctx, tens[0], tenants.TicketFilter{Except: []string{"tbone"}}, &k, 5)
	if err != nil || len(rows) != 1 || rows[0].ID != "tcone" || more {
		t.Fatalf("second page without tbone: %+v, %v, %v", rows, more, err)
	}
	got, err := agents.TicketRows(ctx, tens[0], []string{"taone", "tcone", "tatwo", "nothing"})
	if err != nil || len(got) != 2 || got["taone"].Status != subjects.StatusAllocated || got["tcone"].Type != subjects.Silver {
		t.Fatalf("TicketRows: %+v, %v; want taone and tcone only", got, err)
	}
	if _, err := agents.TicketRows(ctx, tens[0], make([]string, tenants.MaxTicketRows+1)); err == nil {
		t.Fatalf("TicketRows of %d ids: no error", tenants.MaxTicketRows+1)
	}

	f := tenants.TicketFilter{Statuses: []string{subjects.StatusAccepted}, Type: subjects.Gold, Agent: "a1",
		CreatedFrom: ticketsT0, CreatedTo: ticketsT0.Add(time.Hour), DeadlineTo: ticketsT0.Add(2 * time.Hour)}
	deadline := ticketsT0.Add(time.Hour)
	if !f.Matches(subjects.StatusAccepted, subjects.Gold, "a1", ticketsT0, deadline) {
		t.Errorf("Matches refuses a ticket inside every bound")
	}
	for name, ok := range map[string]bool{
		"status":   f.Matches(subjects.StatusAllocated, subjects.Gold, "a1", ticketsT0, deadline),
		"type":     f.Matches(subjects.StatusAccepted, subjects.Silver, "a1", ticketsT0, deadline),
		"agent":    f.Matches(subjects.StatusAccepted, subjects.Gold, "a2", ticketsT0, deadline),
		"from":     f.Matches(subjects.StatusAccepted, subjects.Gold, "a1", ticketsT0.Add(-time.Microsecond), deadline),
		"to":       f.Matches(subjects.StatusAccepted, subjects.Gold, "a1", ticketsT0.Add(time.Hour), deadline),
		"deadline": f.Matches(subjects.StatusAccepted, subjects.Gold, "a1", ticketsT0, ticketsT0.Add(2*time.Hour)),
	} {
		if ok {
			t.Errorf("Matches takes a ticket outside its %s", name)
		}
	}
}
