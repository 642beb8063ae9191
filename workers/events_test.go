package workers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/embedded"
	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
	"tms/workers/calendar"
)

// startEventsAllocator starts an allocator on e's server and tenants,
// on its own connection, recording into metrics.
func startEventsAllocator(t *testing.T, e *respEnv, metrics prometheus.Registerer) {
	t.Helper()
	js, err := jetstream.New(e.connect(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := workers.NewAllocator(testkit.Context(t, 30*time.Second), workers.AllocatorConfig{JS: js, Registry: e.reg,
		Tickets: e.tenants.Tickets, Logger: testkit.Logger(t), Replicas: e.replicas, Backoff: fastBackoff,
		DownBackoff: fastDownBackoff, Metrics: metrics})
	if err != nil {
		t.Fatalf("NewAllocator: %v", err)
	}
	testkit.Run(t, "Allocator", a.Run)
}

// eventSub is a subscription of a service to subject on its own
// connection.
type eventSub struct {
	nc *nats.Conn
	ch chan *nats.Msg
}

func subscribeEvents(t *testing.T, nc *nats.Conn, subject string) *eventSub {
	t.Helper()
	s := &eventSub{nc: nc, ch: make(chan *nats.Msg, 256)}
	sub, err := nc.ChanSubscribe(subject, s.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return s
}

// next is the next event, decoded strictly; it must be of tenant.
func (s *eventSub) next(t *testing.T, tenant string) any {
	t.Helper()
	select {
	case m := <-s.ch:
		ev, err := subjects.DecodeEvent(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("event on %s: %v (%s)", m.Subject, err, m.Data)
		}
		if got, _, _ := subjects.ParseEventSubject(m.Subject); got != tenant {
			t.Fatalf("tenant %s's subscriber got an event of tenant %s: %s", tenant, got, m.Data)
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatalf("no event for tenant %s", tenant)
	}
	return nil
}

// none checks that nothing more reached the subscriber: once its
// connection's flush returns, whatever the server delivered before is in
// the channel.
func (s *eventSub) none(t *testing.T, what string) {
	t.Helper()
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-s.ch:
		t.Errorf("%s: unexpected event on %s: %s", what, m.Subject, m.Data)
	default:
	}
}

// lifecycle runs one tenant's tickets through the real responder and
// allocator, checking each event on sub as it comes: a reserve
// (accepted, then allocated), a hold confirmed (accepted, then
// allocated), and the first one's cancel (cancelled, its row cancelled
// by then).
func lifecycle(t *testing.T, e *respEnv, nc *nats.Conn, ten tenants.Tenant, sub *eventSub) {
	t.Helper()
	sla, _ := subjects.SLA(subjects.Gold)
	ticketOf := func(r subjects.ETAReply) subjects.TicketEvent {
		return subjects.TicketEvent{Tenant: ten.ID, Ticket: r.Ticket, Type: subjects.Gold, Agent: r.Agent,
			SlotTime: r.SlotTime, CreatedAt: r.CreatedAt, Deadline: r.CreatedAt.Add(sla)}
	}
	expect := func(want subjects.TicketEvent) {
		t.Helper()
		got := sub.next(t, ten.ID)
		same := func(ticket, typ, agent string, slot, deadline, created time.Time) bool {
			return ticket == want.Ticket && typ == want.Type && agent == want.Agent && slot.Equal(want.SlotTime) &&
				deadline.Equal(want.Deadline) && created.Equal(want.CreatedAt)
		}
		ok := false
		switch want.Event {
		case subjects.EventAccepted:
			ev, is := got.(subjects.AcceptedEvent)
			ok = is && same(ev.Ticket, ev.Type, ev.Agent, ev.SlotTime, ev.Deadline, ev.CreatedAt)
		case subjects.EventAllocated:
			ev, is := got.(subjects.AllocatedEvent)
			ok = is && same(ev.Ticket, ev.Type, ev.Agent, ev.SlotTime, ev.Deadline, ev.CreatedAt)
			if ok {
				// After the commit: the row is there.
				row, found := tenantstest.TicketRow(t, e.tenants.Tickets, ten, ev.Ticket)
				ok = found && row.Status == subjects.StatusAllocated
			}
		case subjects.EventCancelled:
			ev, is := got.(subjects.CancelledEvent)
			ok = is && same(ev.Ticket, ev.Type, ev.Agent, ev.SlotTime, ev.Deadline, ev.CreatedAt) &&
				ev.CancelledAt.Equal(e.clock.Now())
			if ok {
				row, found := tenantstest.TicketRow(t, e.tenants.Tickets, ten, ev.Ticket)
				ok = found && row.Status == subjects.StatusCancelled
			}
		}
		if !ok {
			t.Fatalf("tenant %s: got %#v, want the %s event of %+v", ten.ID, got, want.Event, want)
		}
	}
	at := func(ev subjects.TicketEvent, kind string) subjects.TicketEvent { ev.Event = kind; return ev }

	r1 := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, e.clock.Now()))
	if r1.Code != http.StatusCreated {
		t.Fatalf("reserve: %+v", r1)
	}
	t1 := ticketOf(r1)
	expect(at(t1, subjects.EventAccepted))
	expect(at(t1, subjects.EventAllocated))

	h := mustAsk(t, nc, e.holdReq(ten.ID, subjects.Gold))
	if h.Code != http.StatusOK {
		t.Fatalf("hold: %+v", h)
	}
	c := mustAsk(t, nc, confirmReq(ten.ID, subjects.Gold, h.SlotID, subjects.NewTicketNonce()))
	if c.Code != http.StatusOK {
		t.Fatalf("confirm: %+v", c)
	}
	t2 := ticketOf(c)
	expect(at(t2, subjects.EventAccepted))
	expect(at(t2, subjects.EventAllocated))
	// A repeated confirm answers the same ticket and is no new one.
	if again := mustAsk(t, nc, confirmReq(ten.ID, subjects.Gold, h.SlotID, c.Ticket[len(c.Ticket)-subjects.TicketNonceLen:])); again.Code != http.StatusOK || again.Ticket != c.Ticket {
		t.Fatalf("repeated confirm: %+v", again)
	}

	if rel := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, t1.CreatedAt, r1)); rel.Code != http.StatusOK {
		t.Fatalf("release: %+v", rel)
	}
	expect(at(t1, subjects.EventCancelled))
}

// TestTicketEvents: each tenant's tickets, through the real responder
// and allocator, are evented on its own subjects in the order of their
// life (accepted before allocated, allocated once the row committed,
// cancelled once the cancel committed), bodies that decode strictly; a
// subscriber of tenant A's events never gets one of B's, nor one of a
// record forged in B's slots in A's name; and the publish failures
// counter exists for every kind.
func TestTicketEvents(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	a := e.account(t, "Events A")
	b := e.account(t, "Events B")
	agA := e.agentAt(t, a, respT0)
	e.agentAt(t, b, respT0)
	metrics := prometheus.NewRegistry()
	r := e.responder(t, func(c *workers.ResponderConfig) { c.Metrics = metrics })
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return r.FreeSlots(a.ID, first, last) > 3 && r.FreeSlots(b.ID, first, last) > 3
	}, "the agents are seen")
	startEventsAllocator(t, e, metrics)

	subA := subscribeEvents(t, e.connect(t), subjects.TenantEvents(a.ID))
	subB := subscribeEvents(t, e.connect(t), subjects.TenantEvents(b.ID))
	all := subscribeEvents(t, e.connect(t), subjects.EventsAll)
	nc := e.connect(t)

	lifecycle(t, e, nc, a, subA)
	subB.none(t, "B's subscriber while A's tickets lived")
	lifecycle(t, e, nc, b, subB)
	subA.none(t, "A's subscriber while B's tickets lived")
	// Every event went out once on the wire, A's and B's: ten.
	for i := 0; i < 10; i++ {
		select {
		case <-all.ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("%d events on %s, want 10", i, subjects.EventsAll)
		}
	}

	// A record in B's slots that names tenant A is no ticket of A's: the
	// allocator dead-letters it, and A hears of nothing.
	slot := respT0.Truncate(time.Minute).Add(90 * time.Minute)
	id, err := subjects.NewSlotTicketID(agA.ID, slot, subjects.NewTicketNonce())
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(subjects.ConfirmedRecord(subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: a.ID,
		Ticket: id, Type: subjects.Gold, Agent: agA.ID, SlotTime: slot, CreatedAt: respT0,
		Deadline: respT0.Add(2 * time.Hour)}, 0))
	if _, err := e.slotKV(t, b.ID).Create(testkit.Context(t, 10*time.Second), subjects.SlotKey(b.ID, agA.ID, slot), forged); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		return counterValue(t, metrics, "tms_allocator_dead_lettered_total", "invalid") == 1
	}, "the forged record dead-lettered")
	subA.none(t, "A's subscriber after a record forged in its name")
	subB.none(t, "B's subscriber after a forged record")

	for _, kind := range subjects.EventKinds {
		if labelled(t, metrics, "tms_events_publish_failed_total", kind) == nil {
			t.Errorf("tms_events_publish_failed_total{kind=%q} missing", kind)
		}
	}
}

// How a tenant's services are kept to their own events (README,
// "Events").
const (
	// isolateAccounts: an account per tenant importing only its own
	// tms.events.<tenant>.>, exported by the tms account to it alone.
	isolateAccounts = "accounts"
	// isolatePermissions: a user per tenant in tms's own account, allowed
	// to subscribe to its events and its own inboxes only.
	isolatePermissions = "permissions"
)

// eventsNATSConfig is a NATS server configuration with tms in account
// TMS (user tms, JetStream) and, for each tenant id, a user named by the
// id (password pw-<id>), isolated as form says: the set-ups the README
// describes (section "Events").
func eventsNATSConfig(port int, storeDir, form string, tenantIDs ...string) string {
	var exports, users, accounts strings.Builder
	for i, id := range tenantIDs {
		events := subjects.TenantEventsExport(id)
		if form == isolatePermissions {
			fmt.Fprintf(&users, "      {user: %q, password: \"pw-%s\", permissions: {subscribe: {allow: [\"%s\", \"_INBOX_%s.>\"]}, "+
				"publish: {allow: [\"tms.api.%s.>\"]}}}\n", id, id, events, id, id)
			continue
		}
		acc := fmt.Sprintf("TENANT_%d", i)
		fmt.Fprintf(&exports, "      {stream: \"%s\", accounts: [%s]}\n", events, acc)
		fmt.Fprintf(&accounts, "  %s: {\n    users: [{user: %q, password: \"pw-%s\"}]\n"+
			"    imports: [{stream: {account: TMS, subject: \"%s\"}}]\n  }\n", acc, id, id, events)
	}
	return fmt.Sprintf(`listen: "127.0.0.1:%d"
jetstream {store_dir: %q}
accounts {
  TMS: {
    jetstream: enabled
    users: [
      {user: tms, password: "pw-tms"}
%s    ]
    exports: [
%s    ]
  }
%s}
`, port, storeDir, users.String(), exports.String(), accounts.String())
}

// TestTicketEventsIsolation: with either set-up of the README, an
// account per tenant or subject permissions in tms's account, a client
// of tenant A gets A's events and never B's, from the real responder and
// allocator running in the tms account: in its own account it may
// subscribe to every event subject (tms.events.>) and gets only its
// imports; with permissions a subscription to B's events is refused.
// The tenants' ids are known once they are created, so the server starts
// with the tms account alone and its configuration is reloaded with the
// tenants, as an operator adds a tenant to a running server.
func TestTicketEventsIsolation(t *testing.T) {
	t.Parallel()
	for _, form := range []string{isolateAccounts, isolatePermissions} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			testEventsIsolation(t, form)
		})
	}
}

func testEventsIsolation(t *testing.T, form string) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	port := testkit.FreePort(t)
	store := filepath.Join(dir, "js")
	if err := os.WriteFile(conf, []byte(eventsNATSConfig(port, store, form)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { embedded.Stop(srv) })
	if !srv.ReadyForConnections(20 * time.Second) {
		t.Fatal("server not ready")
	}
	refused := make(chan error, 16)
	connectAs := func(t testing.TB, user string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, "pw-"+user), nats.Name(t.Name()),
			nats.CustomInboxPrefix("_INBOX_"+user),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case refused <- err:
				default:
				}
			}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	e := (&respEnv{connect: func(t testing.TB) *nats.Conn { return connectAs(t, "tms") }, replicas: 1}).start(t)
	a := e.account(t, "Isolated A")
	b := e.account(t, "Isolated B")
	e.agentAt(t, a, respT0)
	e.agentAt(t, b, respT0)
	r := e.responder(t, nil)
	first, last, _ := calendar.Window(respT0, subjects.Gold)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return r.FreeSlots(a.ID, first, last) > 3 && r.FreeSlots(b.ID, first, last) > 3
	}, "the agents are seen")
	startEventsAllocator(t, e, nil)

	if err := os.WriteFile(conf, []byte(eventsNATSConfig(port, store, form, a.ID, b.ID)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err != nil {
		t.Fatalf("reload with the tenants: %v", err)
	}
	subject := func(tenant string) string {
		if form == isolateAccounts {
			return subjects.EventsAll // whatever the client asks, it gets its imports
		}
		return subjects.TenantEvents(tenant)
	}
	subA := subscribeEvents(t, connectAs(t, a.ID), subject(a.ID))
	subB := subscribeEvents(t, connectAs(t, b.ID), subject(b.ID))
	// Nor can A subscribe its way to B's events.
	spy := subscribeEvents(t, connectAs(t, a.ID), subjects.TenantEvents(b.ID))
	if form == isolatePermissions {
		select {
		case err := <-refused:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("A's subscription to B's events: %v, want a permissions violation", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("A's subscription to B's events was not refused")
		}
	}
	nc := e.connect(t)

	lifecycle(t, e, nc, a, subA)
	lifecycle(t, e, nc, b, subB)
	subA.none(t, "A after B's tickets")
	subB.none(t, "B after A's tickets")
	spy.none(t, "A subscribed to B's events")
	if form == isolatePermissions {
		// A's services may still ask the NATS API for its own tenant: a
		// request published, its reply on A's own inboxes (here no
		// ingress answers: no responders, and no violation).
		_, err := connectAs(t, a.ID).Request(subjects.API(a.ID, subjects.OpGetTicket), []byte(`{}`), 5*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("A's request on its NATS API subject: %v, want no responders (no ingress here)", err)
		}
	}
}

// TestTicketEventsAfterCommit: allocated and cancelled go out once the
// tenant database committed, not when the records are read: with the
// database refusing connections, a new ticket and a cancel are parked and
// nothing is evented; once it is back, each event comes with its row
// already as it says.
func TestTicketEventsAfterCommit(t *testing.T) {
	t.Parallel()
	e := newAllocEnvWith(t, envOpts{agents: 2, tenants: 1})
	tn := e.allocTenant
	sub := subscribeEvents(t, e.nats.Connect(t), subjects.TenantEvents(tn.ten.ID))
	e.start(t, allocOpts{})
	// expect reads the next event: kind of ticket, its row as it says.
	expect := func(got any) (kind, ticket string) {
		t.Helper()
		switch ev := got.(type) {
		case subjects.AllocatedEvent:
			kind, ticket = subjects.EventAllocated, ev.Ticket
			if s := tn.status(t, ticket); s != subjects.StatusAllocated {
				t.Errorf("allocated event of %s, whose row is %q", ticket, s)
			}
		case subjects.CancelledEvent:
			kind, ticket = subjects.EventCancelled, ev.Ticket
			if s := tn.status(t, ticket); s != subjects.StatusCancelled {
				t.Errorf("cancelled event of %s, whose row is %q", ticket, s)
			}
		default:
			t.Fatalf("unexpected event %#v", got)
		}
		return kind, ticket
	}

	first, second := tn.event("commit", 0), tn.event("commit", 1)
	tn.confirm(t, first)
	if kind, ticket := expect(sub.next(t, tn.ten.ID)); kind != subjects.EventAllocated || ticket != first.Ticket {
		t.Fatalf("%s of %s, want allocated of %s", kind, ticket, first.Ticket)
	}

	restore := testkit.RefuseConnections(t, tn.ten.DBName)
	tn.confirm(t, second)
	tn.release(t, first)
	testkit.Eventually(t, 30*time.Second, func() bool { return e.parkedMsgs(t) == 2 }, "both records parked")
	sub.none(t, "while the tenant database refuses connections")

	restore()
	got := map[string]string{}
	for range 2 {
		kind, ticket := expect(sub.next(t, tn.ten.ID))
		got[kind] = ticket
	}
	if got[subjects.EventAllocated] != second.Ticket || got[subjects.EventCancelled] != first.Ticket {
		t.Errorf("events once the database is back: %v; want %s allocated and %s cancelled", got, second.Ticket, first.Ticket)
	}
}
