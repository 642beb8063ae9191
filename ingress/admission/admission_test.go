package admission

import (
	"testing"
	"time"

	"tms/subjects"
)

func TestRequestHashSeparatesFields(t *testing.T) {
	t.Parallel()
	none := Content{}
	a := RequestHash("ab", "GOLD", none)
	if a != RequestHash("ab", "GOLD", none) {
		t.Error("RequestHash is not stable")
	}
	if a == RequestHash("a", "bGOLD", none) || a == RequestHash("ab", "SILVER", none) {
		t.Error("RequestHash collides for different requests")
	}
	seen := map[string]Content{"": none}
	for _, c := range []Content{{Subject: "x"}, {Description: "x"}, {Subject: "x", Description: "y"},
		{Subject: "xy"}, {Subject: "x\u0000y"}, {Subject: "y", Description: "x"}} {
		h := RequestHash("ab", "GOLD", c)
		if h == a {
			t.Errorf("content %+v has the fingerprint of a request without content", c)
		}
		if other, dup := seen[h]; dup {
			t.Errorf("content %+v and %+v share a fingerprint", c, other)
		}
		seen[h] = c
	}
}

// oldRequestHash is RequestHash("c1", "GOLD") of the versions before
// content: sha256 of "create_ticket\x00c1\x00GOLD\x00", in hex.
const oldRequestHash = "734b796c790be4900233bc587dcb8f19634e9aae7d8fe878c5d77a47fadb1d69"

// TestRequestHashWithoutContentIsTheOldOne pins the fingerprint of a
// request without content to the one versions before content wrote: a
// key claimed before an upgrade matches its retry after it.
func TestRequestHashWithoutContentIsTheOldOne(t *testing.T) {
	t.Parallel()
	if got := RequestHash("c1", "GOLD", Content{}); got != oldRequestHash {
		t.Fatalf("RequestHash = %s, want the pinned %s", got, oldRequestHash)
	}
}

// TestTimingBudget pins the service to subjects.DefaultBudget: it takes
// its bounds from it (ETATimeout replacing the ETA), and callTimeout,
// which the claim budget counts, is the budget's Call, so raising one
// without the other fails here rather than shortening the takeover bound.
func TestTimingBudget(t *testing.T) {
	if callTimeout != subjects.DefaultBudget.Call {
		t.Errorf("callTimeout %s, budget's Call %s: declare one from the other", callTimeout, subjects.DefaultBudget.Call)
	}
	if got := newService(Config{}).budget; got != subjects.DefaultBudget {
		t.Errorf("default service budget %+v, want subjects.DefaultBudget %+v", got, subjects.DefaultBudget)
	}
	s := newService(Config{ETATimeout: 7 * time.Second})
	if s.budget.ETA != 7*time.Second || s.budget.Publish != subjects.DefaultBudget.Publish {
		t.Errorf("ETATimeout 7s gives budget %+v", s.budget)
	}
	// The takeover bound moves with the configured ETA timeout: twice
	// (the claim's reserve and the release after it).
	takeover := func(eta time.Duration) time.Duration {
		return newService(Config{ETATimeout: eta}).budget.IdempotencyTakeover()
	}
	if d := takeover(7*time.Second) - takeover(2*time.Second); d != 10*time.Second {
		t.Errorf("an ETA timeout 5s longer moves the takeover bound by %s, want 10s", d)
	}
}

// A done record written before admission was its own package (ingress
// marshalled its acceptedBody) decodes, and encodes again to the very
// same bytes: old records replay, and new ones read the same.
func TestStoredAcceptedIsTheOldBody(t *testing.T) {
	t.Parallel()
	old := `{"status":"accepted","ticket_id":"tabcdefghijklmnopqrst","ticket_type":"GOLD",` +
		`"slot_time":"2030-01-02T03:05:00Z","deadline":"2030-01-02T05:04:05.123456Z",` +
		`"agent_id":"ag1","created_at":"2030-01-02T03:04:05.123456Z"}`
	acc, err := decodeAccepted([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	want := Accepted{TicketID: "tabcdefghijklmnopqrst", Type: "GOLD", Agent: "ag1",
		SlotTime: time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC), Deadline: created.Add(2 * time.Hour), CreatedAt: created}
	if acc != want {
		t.Errorf("decoded %+v, want %+v", acc, want)
	}
	again, err := encodeAccepted(acc)
	if err != nil || string(again) != old {
		t.Errorf("encoded again %s (%v), want %s", again, err, old)
	}
	if _, err := decodeAccepted([]byte(`{"status":"accepted","slot_time":"soon"}`)); err == nil {
		t.Error("a record with no timestamps decodes")
	}
}

// TestCheckAdmitted: a responder's answer becomes a client's 201 only if
// its ticket id is made of the request's nonce and names the reply's
// slot, and the ticket passes the allocators' own check (a slot inside
// the type's window).
func TestCheckAdmitted(t *testing.T) {
	t.Parallel()
	created := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	slot := time.Date(2030, 1, 2, 3, 10, 0, 0, time.UTC)
	nonce := subjects.NewTicketNonce()
	id := func(agent string, minute time.Time, nonce string) string {
		s, err := subjects.NewSlotTicketID(agent, minute, nonce)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ok := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "c1", Ticket: id("a1", slot, nonce), Type: subjects.Gold,
		Agent: "a1", SlotTime: slot, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
	if err := checkAdmitted(ok, nonce, false); err != nil {
		t.Fatalf("a good answer refused: %v", err)
	}
	// A ticket a takeover finds may have moved since its admission: its
	// id names the first slot, the reply its current one (in its window).
	movedTo := ok
	movedTo.Agent, movedTo.SlotTime = "a2", slot.Add(30*time.Minute)
	if err := checkAdmitted(movedTo, nonce, true); err != nil {
		t.Errorf("a moved ticket's answer refused: %v", err)
	}
	if err := checkAdmitted(movedTo, nonce, false); err == nil {
		t.Error("a fresh admission whose id names another slot accepted")
	}
	for name, change := range map[string]func(*subjects.TicketEvent){
		"another nonce":    func(ev *subjects.TicketEvent) { ev.Ticket = id("a1", slot, subjects.NewTicketNonce()) },
		"another agent":    func(ev *subjects.TicketEvent) { ev.Agent = "a2" },
		"another minute":   func(ev *subjects.TicketEvent) { ev.SlotTime = slot.Add(time.Minute) },
		"an old ticket id": func(ev *subjects.TicketEvent) { ev.Ticket = subjects.NewTicketID() },
		"no ticket id":     func(ev *subjects.TicketEvent) { ev.Ticket = "" },
		"outside the window": func(ev *subjects.TicketEvent) {
			late := created.Add(3 * time.Hour).Truncate(time.Minute)
			ev.Ticket, ev.SlotTime = id("a1", late, nonce), late
		},
		"before created_at": func(ev *subjects.TicketEvent) {
			early := created.Add(-time.Hour).Truncate(time.Minute)
			ev.Ticket, ev.SlotTime = id("a1", early, nonce), early
		},
	} {
		ev := ok
		change(&ev)
		if err := checkAdmitted(ev, nonce, false); err == nil {
			t.Errorf("%s: accepted %+v", name, ev)
		}
		if name != "another agent" && name != "another minute" {
			if err := checkAdmitted(ev, nonce, true); err == nil {
				t.Errorf("%s: accepted as a moved ticket %+v", name, ev)
			}
		}
	}
}
