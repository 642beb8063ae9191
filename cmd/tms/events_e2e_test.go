package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tms/ops/testkit"
	"tms/subjects"
)

// eventLog collects one tenant's events, decoded strictly, by ticket.
type eventLog struct {
	mu       sync.Mutex
	byTicket map[string][]string
	bad      []string
}

func (l *eventLog) kinds(ticket string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.byTicket[ticket])
}

func (l *eventLog) tickets() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.byTicket {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// subscribeEvents subscribes to every event of tenant on nc.
func subscribeEvents(t *testing.T, nc *nats.Conn, tenant string) *eventLog {
	t.Helper()
	l := &eventLog{byTicket: map[string][]string{}}
	sub, err := nc.Subscribe(subjects.TenantEvents(tenant), func(m *nats.Msg) {
		l.mu.Lock()
		defer l.mu.Unlock()
		ev, err := subjects.DecodeEvent(m.Subject, m.Data)
		if err != nil {
			l.bad = append(l.bad, fmt.Sprintf("%s %s: %v", m.Subject, m.Data, err))
			return
		}
		var head struct {
			Event, Ticket, Tenant string
		}
		b, _ := json.Marshal(ev)
		_ = json.Unmarshal(b, &head)
		if head.Tenant != tenant {
			l.bad = append(l.bad, fmt.Sprintf("%s: an event of tenant %s", m.Subject, head.Tenant))
			return
		}
		l.byTicket[head.Ticket] = append(l.byTicket[head.Ticket], head.Event)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestTicketEventsThroughTheServer: a service subscribed to its tenant's
// events hears, for tickets created over HTTP and over the NATS API,
// accepted and then allocated (and cancelled for the one cancelled over
// HTTP), and nothing of another tenant's tickets, through tms serve.
func TestTicketEventsThroughTheServer(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve, pub, env := opsServe(t, prefix)
	natsURL := strings.TrimPrefix(env[0], "TMS_NATS_URL=")
	nc, err := nats.Connect(natsURL, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	type tenant struct{ id, token string }
	var ts []tenant
	for i := range 2 {
		id := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
			"client_name": fmt.Sprintf("Events %d", i), "official_email": fmt.Sprintf("events%d@events.example", i), "password": testPassword,
		}), "client_id")
		token := str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": id, "password": testPassword}), "token")
		pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": id, "name": "Ada"})
		ts = append(ts, tenant{id, token})
	}
	a, b := ts[0], ts[1]
	logA, logB := subscribeEvents(t, nc, a.id), subscribeEvents(t, nc, b.id)

	overHTTP := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", a.token, map[string]any{"client_id": a.id, "ticket_type": "GOLD"}), "ticket_id")
	msg, err := nc.Request("tms.api."+a.id+".create_ticket", []byte(`{"client_id":"`+a.id+`","ticket_type":"SILVER"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply map[string]any
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply["code"] != float64(http.StatusCreated) {
		t.Fatalf("NATS create_ticket: %s (%v)", msg.Data, err)
	}
	overNATS := str(t, reply, "ticket_id")
	ofB := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", b.token, map[string]any{"client_id": b.id, "ticket_type": "BRONZE"}), "ticket_id")
	for _, id := range []string{overHTTP, overNATS} {
		waitAllocated(t, pub, a.token, id)
	}
	pub.must(http.StatusOK, http.MethodPost, "/cancel_ticket", a.token, map[string]any{"ticket_id": overHTTP})

	want := map[string][]string{
		overHTTP: {subjects.EventAccepted, subjects.EventAllocated, subjects.EventCancelled},
		overNATS: {subjects.EventAccepted, subjects.EventAllocated},
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		for id, kinds := range want {
			if got := logA.kinds(id); len(got) < len(kinds) {
				return false
			}
		}
		return len(logB.kinds(ofB)) >= 2
	}, "every event of both tenants' tickets")
	for id, kinds := range want {
		// One notification of each. Their order is not compared:
		// accepted comes from the responder and allocated from the
		// allocator, two parts that need not share a connection (the
		// docs tell a subscriber to read allocated as implying
		// accepted).
		if got := logA.kinds(id); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(kinds))) {
			t.Errorf("events of %s: %v, want %v", id, got, kinds)
		}
	}
	if got := logA.tickets(); !slices.Equal(got, slices.Sorted(slices.Values([]string{overHTTP, overNATS}))) {
		t.Errorf("tenant A heard of tickets %v, want only its own two", got)
	}
	if got := logB.tickets(); !slices.Equal(got, []string{ofB}) {
		t.Errorf("tenant B heard of tickets %v, want only %s", got, ofB)
	}
	logA.mu.Lock()
	bad := append(slices.Clone(logA.bad), logB.bad...)
	logA.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("events that do not decode or name another tenant: %v", bad)
	}
	serve.stop()
}
