package workers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// allocEnv is an embedded NATS server, real tenant components over the
// test Postgres, one tenant with agents, and the TICKETS streams.
type allocEnv struct {
	nats    *testkit.NATS
	js      jetstream.JetStream
	reg     *tenants.Registry
	tickets *tenants.Tickets
	ten     tenants.Tenant
	agents  []string
	dbURL   string
}

func newAllocEnv(t *testing.T, agents int) *allocEnv {
	t.Helper()
	ctx := testkit.Context(t, 60*time.Second)
	e := &allocEnv{nats: testkit.StartNATS(t)}
	e.js = e.nats.JetStream(t)
	tw := tenantstest.New(t, e.js, tenantstest.Config{})
	e.reg, e.tickets = tw.Registry, tw.Tickets
	ag := tw.Agents()
	if err := workers.EnsureStreams(ctx, e.js, 1); err != nil {
		t.Fatal(err)
	}
	e.ten = tw.Account(t, "Allocator Co", "ops@alloc.example")
	for i := range agents {
		a, err := ag.Create(ctx, e.ten, fmt.Sprintf("Agent %d", i))
		if err != nil {
			t.Fatal(err)
		}
		e.agents = append(e.agents, a.ID)
	}
	e.dbURL = testkit.DatabaseURL(t, testkit.PostgresURL(), e.ten.DBName)
	return e
}

// fastBackoff keeps redeliveries quick in tests.
func fastBackoff(int) time.Duration { return 20 * time.Millisecond }

// start runs an allocator on its own NATS connection until stop.
func (e *allocEnv) start(t *testing.T, concurrency int, metrics prometheus.Registerer) (stop func()) {
	t.Helper()
	a, err := workers.NewAllocator(testkit.Context(t, 30*time.Second), workers.AllocatorConfig{
		JS: e.nats.JetStream(t), Registry: e.reg, Tickets: e.tickets, Logger: testkit.Logger(t),
		Concurrency: concurrency, Backoff: fastBackoff, AckWait: 2 * time.Second, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	return testkit.Run(t, "Allocator", a.Run)
}

var allocT0 = time.Date(2031, 3, 4, 5, 6, 7, 890000000, time.UTC)

// event is a GOLD ticket of e's tenant created at allocT0, in agent
// i%agents at the (i/agents)-th minute of its window.
func (e *allocEnv) event(kind, ticket string, i int) subjects.TicketEvent {
	slot := allocT0.Truncate(time.Minute).Add(time.Duration(i/len(e.agents)+1) * time.Minute)
	ev := subjects.TicketEvent{Event: kind, Tenant: e.ten.ID, Ticket: ticket, Type: subjects.Gold,
		Agent: e.agents[i%len(e.agents)], SlotTime: slot, CreatedAt: allocT0, Deadline: allocT0.Add(2 * time.Hour)}
	if kind == subjects.TicketCancelled {
		at := allocT0.Add(time.Minute)
		ev.CancelledAt = &at
	}
	return ev
}

// publish sends an event as the ingress does: message id = ticket id
// (":cancel" appended for a cancel).
func (e *allocEnv) publish(t *testing.T, ev subjects.TicketEvent) *jetstream.PubAck {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	id := ev.Ticket
	if ev.Event == subjects.TicketCancelled {
		id += ":cancel"
	}
	return e.publishRaw(t, subjects.TicketSubject(ev.Tenant, ev.Ticket), body, id)
}

func (e *allocEnv) publishRaw(t *testing.T, subject string, body []byte, msgID string) *jetstream.PubAck {
	t.Helper()
	ack, err := e.js.Publish(testkit.Context(t, 10*time.Second), subject, body,
		jetstream.WithMsgID(msgID), jetstream.WithExpectStream(subjects.StreamTickets))
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack
}

// query runs one query on the tenant database on a fresh superuser
// connection (so it works right after the database refused everyone).
func (e *allocEnv) query(t *testing.T, sql string, args ...any) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

func (e *allocEnv) mustQuery(t *testing.T, sql string, args ...any) int {
	t.Helper()
	n, err := e.query(t, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *allocEnv) rows(t *testing.T) int {
	t.Helper()
	return e.mustQuery(t, `SELECT count(*) FROM tickets`)
}

// waitRows waits until the tenant database holds n ticket rows.
func (e *allocEnv) waitRows(t *testing.T, n int) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool {
		got, err := e.query(t, `SELECT count(*) FROM tickets`)
		return err == nil && got >= n
	}, fmt.Sprintf("%d ticket rows", n))
}

// streamEmpty waits until every message of TICKETS has been acked or
// terminated (work-queue retention removes them).
func (e *allocEnv) waitStreamEmpty(t *testing.T) {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	s, err := e.js.Stream(ctx, subjects.StreamTickets)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, "TICKETS stream drained")
}

func (e *allocEnv) status(t *testing.T, id string) string {
	t.Helper()
	row, _ := tenantstest.TicketRow(t, e.tickets, e.ten, id)
	return row.Status // "" while there is none
}

// checkExactlyOnce: every id has exactly one allocated row, there are no
// others, and each row's minute is marked unavailable.
func (e *allocEnv) checkExactlyOnce(t *testing.T, ids []string) {
	t.Helper()
	if n := e.rows(t); n != len(ids) {
		t.Errorf("%d ticket rows, want %d", n, len(ids))
	}
	n := e.mustQuery(t, `SELECT count(*) FROM tickets WHERE id = ANY($1) AND status = 'allocated'`, ids)
	if n != len(ids) {
		t.Errorf("%d of %d tickets allocated", n, len(ids))
	}
	busy := e.mustQuery(t, `SELECT count(*) FROM slots s JOIN tickets t ON t.slot_id = s.id WHERE s.available = 'unavailable'`)
	if busy != len(ids) {
		t.Errorf("%d slots unavailable, want %d", busy, len(ids))
	}
}

// TestAllocatorNoLostTicket is I1 within one process: tickets accepted
// while no allocator runs land once one starts; an allocator stopped half
// way and a new one still land each exactly once.
func TestAllocatorNoLostTicket(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2)
	var ids []string
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprintf("t%03d", i)
			ids = append(ids, id)
			e.publish(t, e.event(subjects.TicketCreated, id, i))
		}
	}
	publish(0, 60)
	if n := e.rows(t); n != 0 {
		t.Fatalf("%d rows before any allocator ran", n)
	}

	stop := e.start(t, 4, nil)
	e.waitRows(t, 10)
	stop()
	publish(60, 100) // accepted while no allocator runs

	if n := e.rows(t); n >= len(ids) {
		t.Fatalf("all %d rows written before the second allocator started", n)
	}
	e.start(t, 4, nil)
	e.waitRows(t, len(ids))
	e.waitStreamEmpty(t)
	e.checkExactlyOnce(t, ids)
}

// TestAllocatorPostgresOutage: while the tenant database refuses
// connections nothing is acked (the events are redelivered, not dropped);
// once it is back every event lands once.
func TestAllocatorPostgresOutage(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1)
	ctx := testkit.Context(t, 60*time.Second)
	metrics := prometheus.NewRegistry()
	e.start(t, 4, metrics)

	// Warm the pool: the outage below must also kill live connections.
	first := e.event(subjects.TicketCreated, "warm", 0)
	e.publish(t, first)
	e.waitRows(t, 1)

	restore := testkit.RefuseConnections(t, e.ten.DBName)

	ids := []string{first.Ticket}
	for i := 1; i <= 10; i++ {
		id := fmt.Sprintf("out%02d", i)
		ids = append(ids, id)
		e.publish(t, e.event(subjects.TicketCreated, id, i))
	}
	cons, err := e.js.Consumer(ctx, subjects.StreamTickets, subjects.ConsumerAllocators)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := e.js.Stream(ctx, subjects.StreamTickets)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumRedelivered >= 10
	}, "every event of the outage redelivered")
	sinfo, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cinfo, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sinfo.State.Msgs != 10 || cinfo.NumAckPending+int(cinfo.NumPending) == 0 {
		t.Fatalf("during the outage: %d messages in the stream, %d ack pending, %d pending; want all 10 kept",
			sinfo.State.Msgs, cinfo.NumAckPending, cinfo.NumPending)
	}
	if got := counterValue(t, metrics, "tms_allocator_failed_total", "unavailable"); got < 10 {
		t.Errorf("failed{unavailable} = %v, want >= 10", got)
	}

	restore()
	e.waitRows(t, len(ids))
	e.waitStreamEmpty(t)
	e.checkExactlyOnce(t, ids)
	if got := counterValue(t, metrics, "tms_allocator_processed_total", subjects.TicketCreated); got != float64(len(ids)) {
		t.Errorf("processed{created} = %v, want %d", got, len(ids))
	}
}

// counterValue reads one labelled child of a registered counter vector
// (0 when it was never incremented).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestAllocatorsShareTheWork: two allocators on two connections share the
// durable consumer; every ticket lands once.
func TestAllocatorsShareTheWork(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 2)
	ctx := testkit.Context(t, 60*time.Second)
	m1, m2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	e.start(t, 2, m1)
	e.start(t, 2, m2)
	cons, err := e.js.Consumer(ctx, subjects.StreamTickets, subjects.ConsumerAllocators)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting >= 2
	}, "both allocators pulling")
	var ids []string
	for i := range 80 {
		id := fmt.Sprintf("s%03d", i)
		ids = append(ids, id)
		e.publish(t, e.event(subjects.TicketCreated, id, i))
	}
	e.waitRows(t, len(ids))
	e.waitStreamEmpty(t)
	e.checkExactlyOnce(t, ids)
	p1 := counterValue(t, m1, "tms_allocator_processed_total", subjects.TicketCreated)
	p2 := counterValue(t, m2, "tms_allocator_processed_total", subjects.TicketCreated)
	if p1 == 0 || p2 == 0 || p1+p2 < float64(len(ids)) {
		t.Errorf("allocators wrote %v and %v of %d", p1, p2, len(ids))
	}
}

// TestAllocatorOrderAndDuplicates: a cancel that arrives first wins, and a
// re-published ticket (same message id, or the same event again after the
// duplicate window) is one row.
func TestAllocatorOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1)
	early := e.event(subjects.TicketCreated, "early-cancel", 0)
	e.publish(t, e.event(subjects.TicketCancelled, early.Ticket, 0))
	e.publish(t, early)

	dup := e.event(subjects.TicketCreated, "dup", 1)
	e.publish(t, dup)
	if ack := e.publish(t, dup); !ack.Duplicate {
		t.Errorf("second publish with the same message id was not a duplicate: %+v", ack)
	}
	// As a retry after the duplicate window would: a new message id.
	body, _ := json.Marshal(dup)
	e.publishRaw(t, subjects.TicketSubject(e.ten.ID, dup.Ticket), body, "dup-again")

	e.start(t, 1, nil)
	e.waitRows(t, 2)
	e.waitStreamEmpty(t)
	if s := e.status(t, early.Ticket); s != subjects.StatusCancelled {
		t.Errorf("cancel-first ticket is %q, want cancelled", s)
	}
	if s := e.status(t, dup.Ticket); s != subjects.StatusAllocated {
		t.Errorf("duplicated ticket is %q, want allocated", s)
	}
	if n := e.rows(t); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
	if n := e.mustQuery(t, `SELECT count(*) FROM slots WHERE time = $1 AND available = 'available'`, early.SlotTime); n != 1 {
		t.Errorf("the cancelled ticket's slot is not available (%d)", n)
	}
}

// deadLetters reads back the dead-letter stream: subject -> reason.
func (e *allocEnv) deadLetters(t *testing.T, want int) map[string]string {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	s, err := e.js.Stream(ctx, subjects.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(want)
	}, fmt.Sprintf("%d dead letters", want))
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.FetchNoWait(want + 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for m := range batch.Messages() {
		got[m.Subject()] = m.Headers().Get(subjects.HeaderDeadLetterReason)
		if m.Headers().Get(subjects.HeaderOriginalSubject) == "" || m.Headers().Get(subjects.HeaderOriginalSequence) == "" {
			t.Errorf("dead letter %s lacks the original subject or sequence: %v", m.Subject(), m.Headers())
		}
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	return got
}

// TestAllocatorDeadLetters: events that can never be written end in the
// dead-letter stream with a reason, and nothing of them is written.
func TestAllocatorDeadLetters(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1)
	subj := func(ticket string) string { return subjects.TicketSubject(e.ten.ID, ticket) }
	good := func(ticket string) subjects.TicketEvent { return e.event(subjects.TicketCreated, ticket, 0) }
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mutate := func(ticket string, f func(*subjects.TicketEvent)) []byte {
		ev := good(ticket)
		f(&ev)
		return marshal(ev)
	}
	other := "nosuchtenant"
	cases := []struct{ subject, body string }{
		{subj("junk"), "{not json"},
		{subj("unknown-field"), `{"event":"created","surprise":1}`},
		{subj("trailing"), string(marshal(good("trailing"))) + ` {}`},
		{subj("tenant-mismatch"), string(mutate("tenant-mismatch", func(ev *subjects.TicketEvent) { ev.Tenant = other }))},
		{subj("ticket-mismatch"), string(mutate("other-ticket", func(ev *subjects.TicketEvent) {}))},
		{subj("bad-type"), string(mutate("bad-type", func(ev *subjects.TicketEvent) { ev.Type = "PLATINUM" }))},
		{subj("bad-kind"), string(mutate("bad-kind", func(ev *subjects.TicketEvent) { ev.Event = "deleted" }))},
		{subj("bad-agent"), string(mutate("bad-agent", func(ev *subjects.TicketEvent) { ev.Agent = "A.B" }))},
		{subj("ghost-agent"), string(mutate("ghost-agent", func(ev *subjects.TicketEvent) { ev.Agent = "aghost" }))},
		{subj("part-minute"), string(mutate("part-minute", func(ev *subjects.TicketEvent) { ev.SlotTime = ev.SlotTime.Add(time.Second) }))},
		{subj("bad-deadline"), string(mutate("bad-deadline", func(ev *subjects.TicketEvent) { ev.Deadline = ev.Deadline.Add(time.Minute) }))},
		{subj("before-window"), string(mutate("before-window", func(ev *subjects.TicketEvent) { ev.SlotTime = allocT0.Truncate(time.Minute) }))},
		{subj("after-window"), string(mutate("after-window", func(ev *subjects.TicketEvent) { ev.SlotTime = ev.Deadline.Truncate(time.Minute) }))},
		{subjects.TicketSubject(other, "t1"), string(mutate("t1", func(ev *subjects.TicketEvent) { ev.Tenant = other }))},
		{"tms.tickets.no-ticket-token", string(marshal(good("x")))},
	}
	for i, c := range cases {
		e.publishRaw(t, c.subject, []byte(c.body), fmt.Sprintf("bad-%d", i))
	}
	metrics := prometheus.NewRegistry()
	e.start(t, 2, metrics)
	got := e.deadLetters(t, len(cases))
	e.waitStreamEmpty(t)
	for _, c := range cases {
		want := subjects.DeadLetterInvalid
		if tenant, ticket, err := subjects.ParseTicketSubject(c.subject); err == nil {
			want = subjects.DeadLetterSubject(tenant, ticket)
		}
		if reason, ok := got[want]; !ok || reason == "" {
			t.Errorf("%s: no dead letter with a reason on %s (got %v)", c.subject, want, got)
		}
	}
	if len(got) != len(cases) {
		t.Errorf("%d dead letters, want %d: %v", len(got), len(cases), got)
	}
	if n := e.rows(t); n != 0 {
		t.Errorf("%d ticket rows written from bad events", n)
	}
	if v := counterValue(t, metrics, "tms_allocator_dead_lettered_total", "unknown_tenant"); v != 1 {
		t.Errorf("dead_lettered{unknown_tenant} = %v, want 1", v)
	}
}

// TestAllocatorConflict: ticket A is cancelled and its minute retaken by
// B, and B's create reaches the worker before A's cancel: the worker finds
// A's pending cancel in the stream, applies it and writes B. A real double
// booking (no cancel coming) ends in the dead-letter stream.
func TestAllocatorConflict(t *testing.T) {
	t.Parallel()
	e := newAllocEnv(t, 1)
	a := e.event(subjects.TicketCreated, "holder-a", 0)
	e.publish(t, a)
	stop := e.start(t, 1, nil)
	e.waitRows(t, 1)
	stop()

	b := e.event(subjects.TicketCreated, "retaker-b", 0)
	e.publish(t, b)
	e.publish(t, e.event(subjects.TicketCancelled, a.Ticket, 0))
	e.start(t, 1, nil)
	e.waitRows(t, 2)
	e.waitStreamEmpty(t)
	if s := e.status(t, a.Ticket); s != subjects.StatusCancelled {
		t.Errorf("A is %q, want cancelled", s)
	}
	if s := e.status(t, b.Ticket); s != subjects.StatusAllocated {
		t.Errorf("B is %q, want allocated", s)
	}
	if n := e.mustQuery(t, `SELECT count(*) FROM slots WHERE time = $1 AND available = 'unavailable'`, b.SlotTime); n != 1 {
		t.Errorf("B's slot is not unavailable (%d)", n)
	}

	c := e.event(subjects.TicketCreated, "double-c", 0)
	e.publish(t, c)
	got := e.deadLetters(t, 1)
	if reason := got[subjects.DeadLetterSubject(e.ten.ID, c.Ticket)]; reason == "" {
		t.Fatalf("double booking not dead-lettered: %v", got)
	}
	e.waitStreamEmpty(t)
	if s := e.status(t, c.Ticket); s != "" {
		t.Errorf("double-booked ticket written as %q", s)
	}
	if s := e.status(t, b.Ticket); s != subjects.StatusAllocated {
		t.Errorf("B is %q after the refused double booking", s)
	}
}
