package testkit_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tms/ops/testkit"
)

// recorder is a Reporter that keeps what the checker reports.
type recorder struct {
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) has(sub string) bool {
	for _, e := range r.errs {
		if strings.Contains(e, sub) {
			return true
		}
	}
	return false
}

var t0 = time.Date(2030, 1, 2, 10, 0, 30, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func created(tenant, key, id, agent string, slot time.Time) testkit.Request {
	return testkit.Request{Kind: testkit.KindCreate, Tenant: tenant, Type: "GOLD", Key: key, Sent: t0,
		First: testkit.Answer{Status: http.StatusCreated, At: t0, Ticket: &testkit.TicketAnswer{
			ID: id, Type: "GOLD", Agent: agent, Slot: slot, CreatedAt: t0, Deadline: t0.Add(2 * time.Hour)}}}
}

func rowOf(id, status, agent string, slot time.Time) testkit.Row {
	return testkit.Row{ID: id, Type: "GOLD", Status: status, Agent: ptr(agent), Start: ptr(slot),
		CreatedAt: t0, Deadline: t0.Add(2 * time.Hour)}
}

// A consistent history and database passes, and the summary counts it.
func TestHistoryCheckPasses(t *testing.T) {
	t.Parallel()
	h := testkit.NewHistory()
	m := t0.Truncate(time.Minute).Add(time.Minute)
	h.Add(created("acme", "k1", "t1", "a1", m))
	h.Add(created("acme", "k2", "t2", "a1", m.Add(time.Minute)))
	h.Add(testkit.Request{Kind: testkit.KindCancel, Tenant: "acme", Ticket: "t2", First: testkit.Answer{Status: http.StatusOK}})
	h.Add(testkit.Request{Kind: testkit.KindCreate, Tenant: "acme", Type: "GOLD", Key: "k3",
		First: testkit.Answer{Status: http.StatusConflict, Code: "sla_unavailable"}})
	// No answer, never resolved: may have left one live ticket.
	h.Add(testkit.Request{Kind: testkit.KindCreate, Tenant: "acme", Type: "GOLD", Key: "k4",
		First: testkit.Answer{Err: "connection reset"}})
	rows := map[string][]testkit.Row{"acme": {
		rowOf("t1", "allocated", "a1", m),
		rowOf("t2", "cancelled", "a1", m.Add(time.Minute)),
		rowOf("t9", "allocated", "a1", m.Add(time.Minute)),
	}}
	var rec recorder
	s := h.CheckRows(&rec, rows)
	if len(rec.errs) != 0 || s.Violations != 0 {
		t.Fatalf("a consistent state reported: %v", rec.errs)
	}
	if s.Creates != 4 || s.Cancels != 1 || s.Created != 2 || s.Rejected != 1 || s.Unanswered != 1 ||
		s.Unresolved != 1 || s.Rows != 3 || s.Live != 2 || s.Extra != 1 {
		t.Fatalf("summary %s", s)
	}
}

// TestHistoryCheckFails feeds the checker a broken state with one of each
// violation it exists for and wants every one reported, not just the
// first.
func TestHistoryCheckFails(t *testing.T) {
	t.Parallel()
	h := testkit.NewHistory()
	m := t0.Truncate(time.Minute).Add(time.Minute)
	h.Add(created("acme", "k1", "t-missing", "a1", m))
	h.Add(created("acme", "k2", "t-double-1", "a1", m.Add(time.Minute)))
	h.Add(created("acme", "k3", "t-moved", "a1", m.Add(2*time.Minute)))
	h.Add(created("acme", "k4", "t-cancelled", "a1", m.Add(3*time.Minute)))
	h.Add(testkit.Request{Kind: testkit.KindCancel, Tenant: "acme", Ticket: "t-cancelled", First: testkit.Answer{Status: http.StatusOK}})
	h.Add(created("acme", "k5", "t-late", "a1", m.Add(4*time.Minute)))
	h.Add(created("acme", "k6", "t-lost-cancel", "a1", m.Add(6*time.Minute)))
	h.Add(testkit.Request{Kind: testkit.KindCancel, Tenant: "acme", Ticket: "t-lost-cancel", First: testkit.Answer{Status: http.StatusNotFound}})
	// One unanswered create, resolved to a 409: it explains no row.
	h.Add(testkit.Request{Kind: testkit.KindCreate, Tenant: "acme", Type: "GOLD", Key: "k7",
		First: testkit.Answer{Err: "timeout"}, Final: testkit.Answer{Status: http.StatusConflict, Code: "sla_unavailable"}})

	late := rowOf("t-late", "allocated", "a1", t0.Add(2*time.Hour)) // slot + 1m past the deadline
	late.Start = ptr(t0.Truncate(time.Minute).Add(2 * time.Hour))
	badDeadline := rowOf("t-extra-2", "cancelled", "a1", m.Add(5*time.Minute))
	badDeadline.Deadline = t0.Add(4 * time.Hour)
	rows := map[string][]testkit.Row{"acme": {
		// t-missing is not there
		rowOf("t-double-1", "allocated", "a1", m.Add(time.Minute)),
		rowOf("t-extra", "allocated", "a1", m.Add(time.Minute)), // nobody asked, and double-books
		rowOf("t-moved", "allocated", "a2", m.Add(2*time.Minute)),
		rowOf("t-cancelled", "allocated", "a1", m.Add(3*time.Minute)),
		late,
		badDeadline,
		rowOf("t-lost-cancel", "allocated", "a1", m.Add(6*time.Minute)),
	}}
	var rec recorder
	s := h.CheckRows(&rec, rows)
	for _, want := range []string{
		"ticket t-missing answered 201",                       // a 201 ticket missing from the database
		"holds 2 live tickets: [t-double-1 t-extra]",          // a double-booked minute
		"2 rows no client was answered 201 for",               // extra rows (t-extra, t-extra-2)
		"1 live rows no client was answered 201 for",          // an extra live row with every request settled
		"ticket t-moved answered agent a1",                    // the database has another slot
		"ticket t-cancelled was cancelled (200) but its row",  // a lost cancel
		"row t-late (GOLD) has slot",                          // a slot outside the SLA
		"row t-extra-2 (GOLD) has deadline",                   // deadline is not created_at + SLA
		"cancel of ticket t-lost-cancel, answered 201 before", // a 404 for a ticket that exists
	} {
		if !rec.has(want) {
			t.Errorf("not reported: %q", want)
		}
	}
	if s.Violations != len(rec.errs) || s.Violations < 9 {
		t.Errorf("summary counts %d violations, %d reported", s.Violations, len(rec.errs))
	}
	if t.Failed() {
		t.Logf("reported:\n%s", strings.Join(rec.errs, "\n"))
	}
}

// TestHistoryCheckDatabase runs Check through a real database whose
// tickets table holds a 201 ticket in place, a row nobody asked for, a
// double-booked minute and a slot outside its SLA; and through an
// unreachable one.
func TestHistoryCheckDatabase(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	dbURL := testkit.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE tickets (id text PRIMARY KEY, type text NOT NULL, status text NOT NULL,
		created_at timestamptz NOT NULL, deadline timestamptz NOT NULL, start_time timestamptz, sa_id text)`); err != nil {
		t.Fatal(err)
	}
	m := t0.Truncate(time.Minute).Add(time.Minute)
	insert := func(id, status string, slot, created time.Time) {
		if _, err := conn.Exec(ctx, `INSERT INTO tickets (id, type, status, created_at, deadline, start_time, sa_id)
			VALUES ($1, 'GOLD', $2, $3, $4, $5, 'a1')`, id, status, created, created.Add(2*time.Hour), slot); err != nil {
			t.Fatal(err)
		}
	}
	insert("t1", "allocated", m, t0)
	insert("t-extra", "allocated", m, t0)
	insert("t-early", "cancelled", m.Add(-time.Hour), t0)

	h := testkit.NewHistory()
	h.Add(created("acme", "k1", "t1", "a1", m))
	var rec recorder
	s := h.Check(&rec, ctx, func(string) string { return dbURL })
	for _, want := range []string{"holds 2 live tickets", "rows no client was answered 201 for", "row t-early (GOLD) has slot"} {
		if !rec.has(want) {
			t.Errorf("not reported: %q (got %v)", want, rec.errs)
		}
	}
	if s.Rows != 3 || s.Live != 2 {
		t.Errorf("summary %s", s)
	}

	var down recorder
	h.Check(&down, ctx, func(string) string { return "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2" })
	if !down.has("reading the tickets of tenant acme") {
		t.Errorf("an unreachable database was not reported: %v", down.errs)
	}
}

// DatabaseURLs names the database tms --db-prefix gives a tenant.
func TestDatabaseURLs(t *testing.T) {
	t.Parallel()
	got := testkit.DatabaseURLs("tmst_x_")("acme")
	if !strings.Contains(got, "/tmst_x_acme") {
		t.Fatalf("DatabaseURLs: %s", got)
	}
}
