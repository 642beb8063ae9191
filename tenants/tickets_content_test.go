package tenants_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// maxDescription is a description of exactly subjects.MaxDescriptionBytes
// bytes, lines and tabs and characters JSON escapes among them.
func maxDescription() string {
	unit := "line <&> \"q\" é\t\r\n"
	d := strings.Repeat(unit, subjects.MaxDescriptionBytes/len(unit))
	return d + strings.Repeat("x", subjects.MaxDescriptionBytes-len(d))
}

// TestTicketContent writes tickets with content by every write that can
// make a row (create, batched create, a cancel first, a move first) and
// reads it back by Get, ListTickets and TicketRows; a ticket without
// content stores NULL; a cancel or move of a written row keeps its
// content; content CheckContent refuses is ErrInvalidTicket, nothing
// written.
func TestTicketContent(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	desc := maxDescription()
	with := func(ev subjects.TicketEvent, subject string) subjects.TicketEvent {
		ev.Subject, ev.Description = subject, desc
		return ev
	}
	created := with(e.event(subjects.TicketCreated, "tc-create", 0), "Printer on fire")
	batched := with(e.event(subjects.TicketCreated, "tc-batch", 1), strings.Repeat("ü", subjects.MaxSubjectRunes))
	cancelFirst := with(e.event(subjects.TicketCancelled, "tc-cancel-first", 2), "cancelled before written")
	moveFirst := with(e.event(subjects.TicketCreated, "tc-move-first", 3), "moved before written")
	plain := e.event(subjects.TicketCreated, "tc-plain", 4)

	if err := e.tickets.ApplyCreated(ctx, e.ten, created); err != nil {
		t.Fatal(err)
	}
	res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, []subjects.TicketEvent{batched, plain})
	if err != nil || res[0] != nil || res[1] != nil {
		t.Fatalf("ApplyCreatedBatch: %v, %v", res, err)
	}
	if err := e.tickets.ApplyCancelled(ctx, e.ten, cancelFirst); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tickets.ApplyMoved(ctx, e.ten, moveFirst, 1); err != nil {
		t.Fatal(err)
	}
	// A cancel of the written create keeps the row's content, whatever
	// the cancel carries (a cancel read back from a row has none).
	cancelCreated := e.event(subjects.TicketCancelled, created.Ticket, 0)
	if err := e.tickets.ApplyCancelled(ctx, e.ten, cancelCreated); err != nil {
		t.Fatal(err)
	}
	// A move of the batched one keeps it too.
	moved := batched
	moved.Subject, moved.Description, moved.SlotTime = "", "", batched.SlotTime.Add(10*time.Minute)
	if r, err := e.tickets.ApplyMoved(ctx, e.ten, moved, 1); err != nil || !r.Applied {
		t.Fatalf("ApplyMoved: %+v, %v", r, err)
	}

	want := map[string]subjects.TicketEvent{created.Ticket: created, batched.Ticket: batched,
		cancelFirst.Ticket: cancelFirst, moveFirst.Ticket: moveFirst, plain.Ticket: plain}
	check := func(how string, row tenants.TicketRow) {
		t.Helper()
		w, ok := want[row.ID]
		if !ok {
			t.Errorf("%s: unexpected row %s", how, row.ID)
			return
		}
		if row.Subject != w.Subject || row.Description != w.Description {
			t.Errorf("%s %s: content (%q, %d bytes), want (%q, %d bytes)", how, row.ID, row.Subject, len(row.Description),
				w.Subject, len(w.Description))
		}
	}
	for id := range want {
		row, err := e.tickets.Get(ctx, e.ten, id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		check("Get", row)
	}
	rows, _, err := e.agents.ListTickets(ctx, e.ten, tenants.TicketFilter{}, nil, tenants.MaxTicketPage)
	if err != nil || len(rows) < len(want) {
		t.Fatalf("ListTickets: %d rows, %v", len(rows), err)
	}
	seen := 0
	for _, row := range rows {
		if _, ok := want[row.ID]; ok {
			check("ListTickets", row)
			seen++
		}
	}
	if seen != len(want) {
		t.Errorf("ListTickets listed %d of the %d tickets", seen, len(want))
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	byID, err := e.agents.TicketRows(ctx, e.ten, ids)
	if err != nil || len(byID) != len(want) {
		t.Fatalf("TicketRows: %d, %v", len(byID), err)
	}
	for _, row := range byID {
		check("TicketRows", row)
	}
	var nulls bool
	if err := e.db.QueryRow(ctx, `SELECT subject IS NULL AND description IS NULL FROM tickets WHERE id = $1`, plain.Ticket).
		Scan(&nulls); err != nil || !nulls {
		t.Errorf("a ticket without content: NULL columns %v, %v", nulls, err)
	}

	for name, ev := range map[string]subjects.TicketEvent{
		"long subject":       with(e.event(subjects.TicketCreated, "tc-bad-1", 20), strings.Repeat("a", subjects.MaxSubjectRunes+1)),
		"control in subject": with(e.event(subjects.TicketCreated, "tc-bad-2", 21), "two\nlines"),
		"long description": func() subjects.TicketEvent {
			ev := e.event(subjects.TicketCreated, "tc-bad-3", 22)
			ev.Description = desc + "x"
			return ev
		}(),
		"invalid UTF-8": with(e.event(subjects.TicketCreated, "tc-bad-4", 23), "\xff"),
	} {
		if err := e.tickets.ApplyCreated(ctx, e.ten, ev); !errors.Is(err, tenants.ErrInvalidTicket) {
			t.Errorf("%s: ApplyCreated = %v, want ErrInvalidTicket", name, err)
		}
		res, err := e.tickets.ApplyCreatedBatch(ctx, e.ten, []subjects.TicketEvent{ev})
		if err != nil || !errors.Is(res[0], tenants.ErrInvalidTicket) {
			t.Errorf("%s: ApplyCreatedBatch = %v, %v, want ErrInvalidTicket", name, res, err)
		}
		if n := e.count(t, ev.Ticket); n != 0 {
			t.Errorf("%s: %d rows written", name, n)
		}
	}
}
