package tenants_test

import (
	"slices"
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
