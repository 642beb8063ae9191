package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"tms/ops/testkit"
)

// accepted is one 201 of create_ticket, its times parsed.
type accepted struct {
	id, typ, agent            string
	slot, createdAt, deadline time.Time
}

func parseAccepted(t *testing.T, m map[string]any) accepted {
	t.Helper()
	tm := func(key string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, str(t, m, key))
		if err != nil {
			t.Fatalf("%s: %v in %v", key, err, m)
		}
		return v
	}
	if m["status"] != "accepted" {
		t.Fatalf("create_ticket 201 without status accepted: %v", m)
	}
	return accepted{id: str(t, m, "ticket_id"), typ: str(t, m, "ticket_type"), agent: str(t, m, "agent_id"),
		slot: tm("slot_time"), createdAt: tm("created_at"), deadline: tm("deadline")}
}

// fill creates tickets of typ one after another until the first 409 and
// returns the accepted ones; every one must satisfy docs/api.md's window rule.
func fill(t *testing.T, pub *api, token, clientID, typ string, sla time.Duration) []accepted {
	t.Helper()
	var out []accepted
	for i := 0; i < 200; i++ {
		code, body := pub.do(http.MethodPost, "/create_ticket", token, map[string]any{"client_id": clientID, "ticket_type": typ})
		if code == http.StatusConflict {
			if body["status"] != "rejected" || body["error"] != "sla_unavailable" || str(t, body, "message") == "" {
				t.Fatalf("409 body %v", body)
			}
			return out
		}
		if code != http.StatusCreated {
			t.Fatalf("create_ticket %s #%d = %d %v", typ, i+1, code, body)
		}
		a := parseAccepted(t, body)
		if a.typ != typ || a.slot.Second() != 0 || a.slot.Nanosecond() != 0 || a.slot.Location() != time.UTC ||
			a.slot.Before(a.createdAt) || a.slot.Add(time.Minute).After(a.deadline) || !a.deadline.Equal(a.createdAt.Add(sla)) {
			t.Fatalf("%s ticket outside its window: %+v", typ, a)
		}
		out = append(out, a)
	}
	t.Fatalf("%s: no 409 after %d tickets", typ, len(out))
	return nil
}

// account opens an account with one available agent and logs in.
func account(t *testing.T, pub *api) (clientID, token, agentID string) {
	t.Helper()
	const password = "correct horse battery"
	acct := pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Tickets Inc", "official_email": "ops@tickets.example", "password": password,
	})
	clientID = str(t, acct, "client_id")
	token = str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": clientID, "password": password}), "token")
	agentID = str(t, pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": clientID, "name": "Ada"}), "agent_id")
	return clientID, token, agentID
}

// waitAllocated waits until the allocators have written the ticket into
// the tenant's database; until then it reads as accepted.
func waitAllocated(t *testing.T, pub *api, token, id string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() bool {
		got := pub.must(http.StatusOK, http.MethodGet, "/tickets/"+id, token, nil)
		switch got["status"] {
		case "allocated":
			return true
		case "accepted":
			return false
		}
		t.Fatalf("GET /tickets/%s: %v", id, got)
		return false
	}, "ticket "+id+" allocated")
}

// TestTicketAdmission is docs/api.md's example through the binary: one agent
// takes about 120 GOLD tickets, refuses the next, still takes about 120
// SILVER; each lands in the tenant's database; a cancel frees its slot for
// the next create; the internal two-phase form and the NATS API admit too.
func TestTicketAdmission(t *testing.T) {
	t.Parallel()
	began := time.Now()
	prefix := testkit.DatabasePrefix(t)
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	listening := serve.logEvent("listening")
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub := newAPI(t, str(t, listening, "public"))
	internal := newAPI(t, str(t, listening, "internal"))
	pub.waitReady(serve)
	clientID, token, agentID := account(t, pub)

	start := time.Now()
	gold := fill(t, pub, token, clientID, "GOLD", 2*time.Hour)
	silver := fill(t, pub, token, clientID, "SILVER", 4*time.Hour)
	t.Logf("%d GOLD and %d SILVER accepted in %s", len(gold), len(silver), time.Since(start))
	// 120 agent-minutes fit in a 2 h window, 119 when the window starts
	// inside a minute, 121 when a minute begins during the run; SILVER's
	// 4 h window holds about 240, about 120 of them taken by GOLD.
	if len(gold) < 119 || len(gold) > 121 {
		t.Errorf("%d GOLD tickets accepted, want 119..121", len(gold))
	}
	if len(silver) < 119 || len(silver) > 121 {
		t.Errorf("%d SILVER tickets accepted, want 119..121", len(silver))
	}
	all := append(append([]accepted{}, gold...), silver...)
	slots := map[time.Time]string{}
	for _, a := range all {
		if a.agent != agentID {
			t.Fatalf("ticket %s on agent %s, want %s", a.id, a.agent, agentID)
		}
		if other, dup := slots[a.slot]; dup {
			t.Fatalf("slot %s given to %s and %s", a.slot, other, a.id)
		}
		slots[a.slot] = a.id
	}

	// A ticket reads at once, and is written by the allocators soon.
	first := gold[0]
	got := pub.must(http.StatusOK, http.MethodGet, "/tickets/"+first.id, token, nil)
	if (got["status"] != "accepted" && got["status"] != "allocated") || got["ticket_id"] != first.id ||
		got["agent_id"] != agentID || got["ticket_type"] != "GOLD" {
		t.Fatalf("GET /tickets/%s: %v", first.id, got)
	}
	waitAllocated(t, pub, token, first.id)

	// Cancel the last GOLD ticket: its slot is the only free minute in a
	// GOLD window now, so the next GOLD create must take exactly it.
	freed := gold[len(gold)-1]
	for range 2 {
		out := pub.must(http.StatusOK, http.MethodPost, "/cancel_ticket", token, map[string]any{"ticket_id": freed.id})
		if out["status"] != "cancelled" || out["ticket_id"] != freed.id || len(out) != 2 {
			t.Fatalf("cancel_ticket: %v", out)
		}
	}
	retake := parseAccepted(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token,
		map[string]any{"client_id": clientID, "ticket_type": "GOLD"}))
	if !retake.slot.Equal(freed.slot) || retake.agent != freed.agent {
		t.Fatalf("the create after the cancel took %s, want the freed slot %s", retake.slot, freed.slot)
	}
	pub.must(http.StatusConflict, http.MethodPost, "/create_ticket", token, map[string]any{"client_id": clientID, "ticket_type": "GOLD"})
	if got := pub.must(http.StatusOK, http.MethodGet, "/tickets/"+freed.id, token, nil); got["status"] != "cancelled" {
		t.Fatalf("GET cancelled ticket: %v", got)
	}

	// Idempotency-Key: the same key gives the first answer again.
	key := map[string]string{"Idempotency-Key": "order-4711"}
	bronze := map[string]any{"client_id": clientID, "ticket_type": "BRONZE"}
	_, once := pub.doWith(http.MethodPost, "/create_ticket", token, key, bronze)
	code, twice := pub.doWith(http.MethodPost, "/create_ticket", token, key, bronze)
	if code != http.StatusCreated || once["ticket_id"] == nil || once["ticket_id"] != twice["ticket_id"] {
		t.Fatalf("Idempotency-Key: %v then %d %v", once, code, twice)
	}

	// The internal two-phase form: a hold, then a ticket in its slot.
	hold := internal.must(http.StatusOK, http.MethodPost, "/validate_eta", "", bronze)
	if hold["status"] != "available" {
		t.Fatalf("validate_eta: %v", hold)
	}
	slotID := str(t, hold, "slot_id")
	alloc := internal.must(http.StatusCreated, http.MethodPost, "/allocate_slot", "",
		map[string]any{"client_id": clientID, "ticket_type": "BRONZE", "slot_id": slotID})
	if alloc["status"] != "allocated" {
		t.Fatalf("allocate_slot: %v", alloc)
	}
	held := pub.must(http.StatusOK, http.MethodGet, "/tickets/"+str(t, alloc, "ticket_id"), token, nil)
	if held["slot_time"] != hold["slot_time"] || held["ticket_type"] != "BRONZE" {
		t.Fatalf("ticket from allocate_slot %v, hold %v", held, hold)
	}
	internal.must(http.StatusGone, http.MethodPost, "/allocate_slot", "",
		map[string]any{"client_id": clientID, "ticket_type": "BRONZE", "slot_id": slotID})

	// The NATS API, as a service publishing directly would use it.
	nc, err := nats.Connect(natsURL, nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("tms.api."+clientID+".create_ticket", []byte(`{"client_id":"`+clientID+`","ticket_type":"BRONZE"}`), 10*time.Second)
	if err != nil {
		t.Fatalf("NATS create_ticket: %v", err)
	}
	var viaNATS map[string]any
	if err := json.Unmarshal(msg.Data, &viaNATS); err != nil || viaNATS["code"] != float64(http.StatusCreated) || viaNATS["status"] != "accepted" {
		t.Fatalf("NATS create_ticket reply %s (%v)", msg.Data, err)
	}

	// Every live ticket reaches the tenant's own database exactly once.
	// GOLD and SILVER without the cancelled one, then the retake, the
	// keyed BRONZE, the held one and the one over NATS.
	want := len(all) - 1 + 4
	db := tenantDB(t, prefix+clientID)
	ctx := testkit.Context(t, 60*time.Second)
	testkit.Eventually(t, 30*time.Second, func() bool {
		var live, cancelled int
		err := db.QueryRow(ctx,
			`SELECT count(*) FILTER (WHERE status = 'allocated'), count(*) FILTER (WHERE status = 'cancelled') FROM tickets`).
			Scan(&live, &cancelled)
		if err != nil {
			t.Fatalf("counting tickets: %v", err)
		}
		return live == want && cancelled == 1
	}, fmt.Sprintf("%d allocated and 1 cancelled ticket in the tenant database", want))

	metrics := fmt.Sprint(pub.must(http.StatusOK, http.MethodGet, "/metrics", "", nil)["raw"])
	for _, name := range []string{"tms_eta_requests_total", "tms_allocator_processed_total"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	serve.stop()
	t.Logf("whole test %s", time.Since(began))
}

// TestSplitRoles is the scaled-out shape on one external NATS: tms ingress
// has no responder and no allocator, so a ticket it admits was reserved
// and written by tms worker.
func TestSplitRoles(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	ns := testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	worker := startTMS(t, env, "worker")
	ingress := startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix)
	pub := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub.waitReady(ingress)
	worker.logEvent("eta responder ready")

	clientID, token, _ := account(t, pub)
	a := parseAccepted(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token,
		map[string]any{"client_id": clientID, "ticket_type": "SILVER"}))
	waitAllocated(t, pub, token, a.id)
	pub.must(http.StatusOK, http.MethodPost, "/cancel_ticket", token, map[string]any{"ticket_id": a.id})

	ingress.stop()
	worker.stop()
}

func tenantDB(t *testing.T, name string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testkit.Context(t, 10*time.Second), testkit.DatabaseURL(t, testkit.PostgresURL(), name))
	if err != nil {
		t.Fatalf("connect to tenant database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}
