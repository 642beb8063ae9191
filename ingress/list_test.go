package ingress

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
)

// Tests of GET /tickets and list_tickets through the real server: the
// ticket env's routers and NATS API over embedded JetStream and Postgres.
// Most tickets are written straight into the tenant database as an
// allocator writes them (tenants.Tickets), so their times are the test's
// to choose; one goes the whole way from create_ticket.

// listSeed writes tickets into a tenant's database.
type listSeed struct {
	e      *ticketEnv
	t      *testing.T
	tenant tenants.Tenant
	minute int // the next free slot minute, so no two tickets share one
	events []subjects.TicketEvent
}

func (e *ticketEnv) seeder(t *testing.T, a account) *listSeed {
	t.Helper()
	tn, err := e.registry.Get(testkit.Context(t, 10*time.Second), a.id)
	if err != nil {
		t.Fatalf("tenant %s: %v", a.id, err)
	}
	return &listSeed{e: e, t: t, tenant: tn}
}

// listT0 is the seeded tickets' time scale.
var listT0 = time.Date(2030, 3, 4, 5, 6, 7, 890123000, time.UTC)

// add writes an allocated ticket of typ on agent, created at created and
// due at deadline.
func (s *listSeed) add(agent, typ string, created, deadline time.Time) subjects.TicketEvent {
	s.t.Helper()
	s.minute++
	ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: s.tenant.ID, Ticket: subjects.NewTicketID(), Type: typ,
		Agent: agent, SlotTime: listT0.Truncate(time.Minute).Add(time.Duration(s.minute) * time.Minute), CreatedAt: created,
		Deadline: deadline}
	if err := s.e.tickets.ApplyCreated(testkit.Context(s.t, 10*time.Second), s.tenant, ev); err != nil {
		s.t.Fatalf("seeding ticket: %v", err)
	}
	s.events = append(s.events, ev)
	return ev
}

func (s *listSeed) cancel(ev subjects.TicketEvent) {
	s.t.Helper()
	ev.Event = subjects.TicketCancelled
	at := ev.CreatedAt.Add(time.Minute)
	ev.CancelledAt = &at
	if err := s.e.tickets.ApplyCancelled(testkit.Context(s.t, 10*time.Second), s.tenant, ev); err != nil {
		s.t.Fatalf("cancelling seeded ticket: %v", err)
	}
}

// listed is one page: its ticket ids, the tickets, and the next cursor.
type listed struct {
	ids     []string
	tickets []map[string]any
	next    string // "" on the last page
}

func pageOf(t *testing.T, body map[string]any) listed {
	t.Helper()
	raw, ok := body["tickets"].([]any)
	if !ok {
		t.Fatalf("tickets = %v, want a list", body["tickets"])
	}
	var p listed
	for _, x := range raw {
		m := x.(map[string]any)
		p.tickets = append(p.tickets, m)
		p.ids = append(p.ids, m["ticket_id"].(string))
	}
	if c, ok := body["next_cursor"]; ok {
		if p.next, _ = c.(string); p.next == "" {
			t.Fatalf("next_cursor = %v, want a cursor or no member", c)
		}
	}
	return p
}

func (e *ticketEnv) listPage(t *testing.T, a account, query string) listed {
	t.Helper()
	return pageOf(t, e.must(t, http.StatusOK, request{method: "GET", path: "/tickets" + query, token: a.token}))
}

// listAll follows the cursors from query to the last page (at most 50).
func (e *ticketEnv) listAll(t *testing.T, a account, query url.Values) []string {
	t.Helper()
	var ids []string
	for range 50 {
		p := e.listPage(t, a, "?"+query.Encode())
		ids = append(ids, p.ids...)
		if p.next == "" {
			return ids
		}
		query.Set("cursor", p.next)
	}
	t.Fatalf("more than 50 pages")
	return nil
}

// want is the ids of the seeded events that pass keep, in listing order.
func (s *listSeed) want(keep func(subjects.TicketEvent) bool) []string {
	evs := slices.Clone(s.events)
	slices.SortFunc(evs, func(x, y subjects.TicketEvent) int {
		if c := x.CreatedAt.Compare(y.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.Ticket, y.Ticket)
	})
	var ids []string
	for _, ev := range evs {
		if keep(ev) {
			ids = append(ids, ev.Ticket)
		}
	}
	return ids
}

// TestListTickets: every filter alone and together, pages of 1..n that
// add up to the whole listing in order with no repeats, a ticket created
// meanwhile before the cursor never shows up on later pages, each entry
// is the ticket as GET /tickets/{id} answers it, and list_tickets on NATS
// answers the same pages with the same cursors. Another tenant's tickets
// are never listed.
func TestListTickets(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, ann := e.tenantWithAgent(t, "Listco", "ops@listco.example")
	bob := e.addAgent(t, a)
	other, otherAgent := e.tenantWithAgent(t, "Elsewhere", "ops@elsewhere.example")

	s := e.seeder(t, a)
	types := []string{subjects.Gold, subjects.Silver, subjects.Bronze}
	for i := range 9 {
		agent := ann
		if i%3 == 2 {
			agent = bob
		}
		// Pairs share a created_at: the id orders them.
		created := listT0.Add(time.Duration(i/2) * time.Minute)
		s.add(agent, types[i%3], created, created.Add(time.Duration(1+i%4)*time.Hour))
	}
	cancelled := s.events[4]
	s.cancel(cancelled)
	o := e.seeder(t, other)
	for i := range 3 {
		o.add(otherAgent, subjects.Gold, listT0.Add(time.Duration(i)*time.Minute), listT0.Add(time.Hour))
	}
	all := s.want(func(subjects.TicketEvent) bool { return true })

	// The whole listing, at every page size: complete, in order, once each.
	for _, limit := range []string{"1", "2", "4", "9", "200", ""} {
		q := url.Values{}
		if limit != "" {
			q.Set("limit", limit)
		}
		if got := e.listAll(t, a, q); !slices.Equal(got, all) {
			t.Fatalf("limit %q: listed %v, want %v", limit, got, all)
		}
	}
	if got := e.listAll(t, other, url.Values{}); !slices.Equal(got, o.want(func(subjects.TicketEvent) bool { return true })) {
		t.Fatalf("other tenant lists %v, want only its own %v", got, o.events)
	}

	// Each entry is GET /tickets/{id}'s answer.
	first := e.listPage(t, a, "?limit=200")
	for _, tk := range first.tickets {
		got := e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/" + tk["ticket_id"].(string), token: a.token})
		if !reflect.DeepEqual(got, tk) {
			t.Errorf("listed %v, GET answers %v", tk, got)
		}
		if tk["ticket_id"] == cancelled.Ticket && tk["status"] != subjects.StatusCancelled ||
			tk["ticket_id"] != cancelled.Ticket && tk["status"] != subjects.StatusAllocated {
			t.Errorf("ticket %v has status %v", tk["ticket_id"], tk["status"])
		}
	}

	// A ticket created between pages, before the cursor, is not on the
	// later pages, and the pages still add up to the listing as it was.
	p1 := e.listPage(t, a, "?limit=4")
	late := s.add(ann, subjects.Gold, listT0.Add(-time.Hour), listT0.Add(time.Hour))
	q := url.Values{"limit": {"4"}, "cursor": {p1.next}}
	if got := append(slices.Clone(p1.ids), e.listAll(t, a, q)...); !slices.Equal(got, all) {
		t.Fatalf("pages around a new ticket: %v, want %v", got, all)
	}
	all = s.want(func(subjects.TicketEvent) bool { return true })
	if all[0] != late.Ticket {
		t.Fatalf("the new ticket is not first: %v", all)
	}

	in := func(ts time.Time, from, to time.Time) bool { return !ts.Before(from) && ts.Before(to) }
	cFrom, cTo := listT0.Add(time.Minute), listT0.Add(3*time.Minute)
	dFrom, dTo := listT0.Add(2*time.Hour), listT0.Add(4*time.Hour)
	for _, c := range []struct {
		query url.Values
		keep  func(subjects.TicketEvent) bool
	}{
		{url.Values{"status": {"cancelled"}}, func(ev subjects.TicketEvent) bool { return ev.Ticket == cancelled.Ticket }},
		{url.Values{"status": {"allocated"}}, func(ev subjects.TicketEvent) bool { return ev.Ticket != cancelled.Ticket }},
		{url.Values{"status": {"allocated,cancelled"}}, func(subjects.TicketEvent) bool { return true }},
		{url.Values{"status": {"cancelled", "accepted"}}, func(ev subjects.TicketEvent) bool { return ev.Ticket == cancelled.Ticket }},
		{url.Values{"status": {"accepted"}}, func(subjects.TicketEvent) bool { return false }},
		{url.Values{"type": {"SILVER"}}, func(ev subjects.TicketEvent) bool { return ev.Type == subjects.Silver }},
		{url.Values{"agent": {bob}}, func(ev subjects.TicketEvent) bool { return ev.Agent == bob }},
		{url.Values{"agent": {otherAgent}}, func(subjects.TicketEvent) bool { return false }},
		{url.Values{"created_from": {timestamp(cFrom)}}, func(ev subjects.TicketEvent) bool { return !ev.CreatedAt.Before(cFrom) }},
		{url.Values{"created_to": {timestamp(cTo)}}, func(ev subjects.TicketEvent) bool { return ev.CreatedAt.Before(cTo) }},
		{url.Values{"created_from": {timestamp(cFrom)}, "created_to": {timestamp(cTo)}},
			func(ev subjects.TicketEvent) bool { return in(ev.CreatedAt, cFrom, cTo) }},
		{url.Values{"deadline_from": {timestamp(dFrom)}, "deadline_to": {dTo.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano)}},
			func(ev subjects.TicketEvent) bool { return in(ev.Deadline, dFrom, dTo) }},
		{url.Values{"type": {"GOLD"}, "agent": {ann}, "status": {"allocated"}, "deadline_from": {timestamp(dFrom)}},
			func(ev subjects.TicketEvent) bool {
				return ev.Type == subjects.Gold && ev.Agent == ann && ev.Ticket != cancelled.Ticket && !ev.Deadline.Before(dFrom)
			}},
	} {
		want := s.want(c.keep)
		c.query.Set("limit", "2")
		if got := e.listAll(t, a, c.query); !slices.Equal(got, want) {
			t.Errorf("%s: listed %v, want %v", c.query.Encode(), got, want)
		}
	}

	// NATS: the same pages and cursors, the same parameters as members.
	body := map[string]any{"limit": 3, "status": []string{"allocated", "cancelled"}, "created_from": timestamp(listT0)}
	httpQ := url.Values{"limit": {"3"}, "status": {"allocated,cancelled"}, "created_from": {timestamp(listT0)}}
	var viaNATS []string
	for range 10 {
		reply := e.natsCall(t, a.id, subjects.OpListTickets, body, nil)
		if reply["code"] != float64(http.StatusOK) {
			t.Fatalf("list_tickets: %v", reply)
		}
		delete(reply, "code")
		pn := pageOf(t, reply)
		ph := e.listPage(t, a, "?"+httpQ.Encode())
		if !slices.Equal(pn.ids, ph.ids) || pn.next != ph.next || !reflect.DeepEqual(pn.tickets, ph.tickets) {
			t.Fatalf("NATS page %v (next %q), HTTP page %v (next %q)", pn.ids, pn.next, ph.ids, ph.next)
		}
		viaNATS = append(viaNATS, pn.ids...)
		if pn.next == "" {
			break
		}
		body["cursor"], httpQ["cursor"] = pn.next, []string{pn.next}
	}
	if want := s.want(func(ev subjects.TicketEvent) bool { return !ev.CreatedAt.Before(listT0) }); !slices.Equal(viaNATS, want) {
		t.Fatalf("NATS listed %v, want %v", viaNATS, want)
	}
	reply := e.natsCall(t, other.id, subjects.OpListTickets, map[string]any{}, nil)
	delete(reply, "code")
	if got := pageOf(t, reply).ids; !slices.Equal(got, o.want(func(subjects.TicketEvent) bool { return true })) {
		t.Fatalf("other tenant's list_tickets: %v", got)
	}
}

// TestListTicketsBadInput: every parameter's bad values are a 400 naming
// it, on HTTP and NATS; a cursor altered, of another tenant, or brought
// to other filters is 400 invalid_cursor; nothing changes (the listing
// after is the listing before).
func TestListTicketsBadInput(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, ann := e.tenantWithAgent(t, "Badlist", "ops@badlist.example")
	other, _ := e.tenantWithAgent(t, "Otherlist", "ops@otherlist.example")
	s := e.seeder(t, a)
	for i := range 3 {
		s.add(ann, subjects.Gold, listT0.Add(time.Duration(i)*time.Minute), listT0.Add(time.Hour))
	}
	o := e.seeder(t, other)
	o.add(e.addAgent(t, other), subjects.Gold, listT0, listT0.Add(time.Hour))
	before := e.listAll(t, a, url.Values{})

	cursor := e.listPage(t, a, "?limit=1").next
	gold := e.listPage(t, a, "?limit=1&type=GOLD").next
	otherCursor := e.listPage(t, other, "?limit=1").next
	if cursor == "" || gold == "" {
		t.Fatalf("no cursor to test with")
	}
	if otherCursor != "" {
		t.Fatalf("the other tenant's one ticket has a next page")
	}
	otherCursor = encodeCursor(other.id, tenants.TicketFilter{}, tenants.TicketKey{CreatedAt: listT0, ID: o.events[0].Ticket})
	flipped := []byte(cursor)
	flipped[3] ^= 1
	for _, c := range []struct{ query, code string }{
		{"?bogus=1", codeUnknownField},
		{"?status=", codeInvalidField},
		{"?status=open", codeInvalidField},
		{"?status=allocated,", codeInvalidField},
		{"?status=ALLOCATED", codeInvalidField},
		{"?type=gold", codeInvalidField},
		{"?type=", codeInvalidField},
		{"?type=GOLD&type=SILVER", codeInvalidField},
		{"?agent=", codeInvalidField},
		{"?agent=Bad.Agent", codeInvalidField},
		{"?created_from=yesterday", codeInvalidField},
		{"?created_from=2030-01-02", codeInvalidField},
		{"?created_to=2030-01-02T03:04:05", codeInvalidField},
		{"?deadline_from=2030-13-02T03:04:05Z", codeInvalidField},
		{"?deadline_to=", codeInvalidField},
		{"?created_from=2030-01-02T00:00:00Z&created_to=2030-01-02T00:00:00Z", codeInvalidField},
		{"?deadline_from=2030-01-03T00:00:00Z&deadline_to=2030-01-02T00:00:00Z", codeInvalidField},
		{"?limit=0", codeInvalidField},
		{"?limit=201", codeInvalidField},
		{"?limit=-1", codeInvalidField},
		{"?limit=05", codeInvalidField},
		{"?limit=ten", codeInvalidField},
		{"?limit=1&limit=2", codeInvalidField},
		{"?limit=99999999999999999999", codeInvalidField},
		{"?cursor=", codeInvalidCursor},
		{"?cursor=***", codeInvalidCursor},
		{"?cursor=" + strings.Repeat("A", 400), codeInvalidCursor},
		{"?cursor=" + string(flipped), codeInvalidCursor},
		{"?cursor=" + cursor[:len(cursor)-2], codeInvalidCursor},
		{"?cursor=" + otherCursor, codeInvalidCursor},
		{"?cursor=" + cursor + "&type=GOLD", codeInvalidCursor},
		{"?cursor=" + gold, codeInvalidCursor},
		{"?cursor=" + cursor + "&cursor=" + cursor, codeInvalidField},
		{"?%zz", codeInvalidField},
	} {
		resp := e.do(t, request{method: "GET", path: "/tickets" + c.query, token: a.token})
		if resp.status != http.StatusBadRequest || resp.body["error"] != c.code {
			t.Errorf("GET /tickets%s: %d %s, want 400 %s", c.query, resp.status, resp.raw, c.code)
		}
	}
	// The cursor of the other tenant is refused for this one, and this
	// one's for the other: the listing never crosses tenants.
	if resp := e.do(t, request{method: "GET", path: "/tickets?cursor=" + cursor, token: other.token}); resp.status != http.StatusBadRequest {
		t.Errorf("a cursor of another tenant: %d %s", resp.status, resp.raw)
	}
	if resp := e.do(t, request{method: "GET", path: "/tickets"}); resp.status != http.StatusUnauthorized {
		t.Errorf("GET /tickets without a token: %d %s", resp.status, resp.raw)
	}

	for _, c := range []struct {
		body any
		code string
	}{
		{map[string]any{"bogus": 1}, codeUnknownField},
		{map[string]any{"status": []string{}}, codeInvalidField},
		{map[string]any{"status": "allocated"}, codeInvalidField},
		{map[string]any{"status": nil}, codeInvalidField},
		{map[string]any{"status": []string{"open"}}, codeInvalidField},
		{map[string]any{"type": "gold"}, codeInvalidField},
		{map[string]any{"agent": "A"}, codeInvalidField},
		{map[string]any{"created_from": "soon"}, codeInvalidField},
		{map[string]any{"deadline_to": 5}, codeInvalidField},
		{map[string]any{"limit": 0}, codeInvalidField},
		{map[string]any{"limit": 201}, codeInvalidField},
		{map[string]any{"limit": 1.5}, codeInvalidField},
		{map[string]any{"cursor": otherCursor}, codeInvalidCursor},
		{map[string]any{"cursor": cursor, "agent": ann}, codeInvalidCursor},
		{map[string]any{"client_id": other.id}, codeForbidden},
	} {
		reply := e.natsCall(t, a.id, subjects.OpListTickets, c.body, nil)
		want := float64(http.StatusBadRequest)
		if c.code == codeForbidden {
			want = http.StatusForbidden
		}
		if reply["code"] != want || reply["error"] != c.code {
			t.Errorf("list_tickets %v: %v, want %v %s", c.body, reply, want, c.code)
		}
	}

	if after := e.listAll(t, a, url.Values{}); !slices.Equal(after, before) {
		t.Fatalf("listing after the bad requests %v, before %v", after, before)
	}
}

// TestListTicketsNotYetWritten: tickets accepted through create_ticket
// are listed at once from their slot records (accepted; a cancel
// cancelled), merged in order with the rows already written, each as GET
// /tickets/{id} answers it; once an allocator has written them they are
// allocated, listed once each.
func TestListTicketsNotYetWritten(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Madeco", "ops@madeco.example")
	old := e.seeder(t, a).add(agent, subjects.Bronze, e.clock.Now().Add(-time.Hour), e.clock.Now().Add(time.Hour))
	ids := []string{e.createWhenReady(t, a, subjects.Silver)["ticket_id"].(string)}
	for range 2 {
		resp := e.create(t, a, subjects.Gold, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.status, resp.raw)
		}
		ids = append(ids, resp.body["ticket_id"].(string))
	}
	if resp := e.cancel(t, a, ids[1]); resp.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", resp.status, resp.raw)
	}
	// The tickets share the frozen clock's created_at: the id orders them.
	created := slices.Clone(ids)
	slices.Sort(created)
	all := append([]string{old.Ticket}, created...)

	check := func(wantStatus map[string]string) {
		t.Helper()
		for _, limit := range []string{"1", "3", "50"} {
			if got := e.listAll(t, a, url.Values{"limit": {limit}}); !slices.Equal(got, all) {
				t.Fatalf("limit %s: listed %v, want %v", limit, got, all)
			}
		}
		for _, tk := range e.listPage(t, a, "").tickets {
			id := tk["ticket_id"].(string)
			got := e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/" + id, token: a.token})
			if !reflect.DeepEqual(got, tk) || tk["status"] != wantStatus[id] {
				t.Errorf("listed %v, GET answers %v, want status %s", tk, got, wantStatus[id])
			}
		}
		var accepted []string
		for _, id := range all {
			if wantStatus[id] == subjects.StatusAccepted {
				accepted = append(accepted, id)
			}
		}
		if got := e.listAll(t, a, url.Values{"status": {"accepted"}}); !slices.Equal(got, accepted) {
			t.Errorf("accepted tickets: %v, want %v", got, accepted)
		}
	}
	check(map[string]string{old.Ticket: subjects.StatusAllocated, ids[0]: subjects.StatusAccepted,
		ids[1]: subjects.StatusCancelled, ids[2]: subjects.StatusAccepted})

	e.startAllocator(t)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(e.listPage(t, a, "?status=allocated").ids) == 3
	}, "the allocator to write the tickets")
	check(map[string]string{old.Ticket: subjects.StatusAllocated, ids[0]: subjects.StatusAllocated,
		ids[1]: subjects.StatusCancelled, ids[2]: subjects.StatusAllocated})
}

// TestListCursor: a cursor decodes to the key it was made of only with
// the tenant and filters it was made for.
func TestListCursor(t *testing.T) {
	k := tenants.TicketKey{CreatedAt: listT0, ID: "t-abc"}
	f := tenants.TicketFilter{Statuses: []string{"allocated"}, Agent: "a1", CreatedFrom: listT0}
	c := encodeCursor("c1", f, k)
	if got, err := decodeCursor(c, "c1", f); err != nil || !got.CreatedAt.Equal(k.CreatedAt) || got.ID != k.ID {
		t.Fatalf("decodeCursor = %+v, %v; want %+v", got, err, k)
	}
	for name, tf := range map[string]struct {
		tenant string
		f      tenants.TicketFilter
	}{
		"tenant":  {"c2", f},
		"status":  {"c1", tenants.TicketFilter{Statuses: []string{"cancelled"}, Agent: "a1", CreatedFrom: listT0}},
		"agent":   {"c1", tenants.TicketFilter{Statuses: []string{"allocated"}, Agent: "a2", CreatedFrom: listT0}},
		"created": {"c1", tenants.TicketFilter{Statuses: []string{"allocated"}, Agent: "a1"}},
	} {
		if _, err := decodeCursor(c, tf.tenant, tf.f); err == nil {
			t.Errorf("a cursor with another %s decodes", name)
		}
	}
}

// TestListTicketsSlotRecords: the listing reads only its tenant's slot
// records (another tenant's in the same shard is never listed), skips a
// record that does not decode, and reads at most the bound it is given.
func TestListTicketsSlotRecords(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, agent := e.tenantWithAgent(t, "Recco", "ops@recco.example")
	ids := []string{e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)}
	for range 2 {
		resp := e.create(t, a, subjects.Bronze, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.status, resp.raw)
		}
		ids = append(ids, resp.body["ticket_id"].(string))
	}
	slices.Sort(ids)

	ctx := testkit.Context(t, 30*time.Second)
	kv, err := e.js.KeyValue(ctx, subjects.SlotBucket(subjects.SlotShard(a.id, subjects.DefaultSlotShards)))
	if err != nil {
		t.Fatalf("slot bucket: %v", err)
	}
	// A tenant that hashes elsewhere, written into this shard anyway: as
	// a tenant of the same shard would be.
	stranger := subjects.NewID("c", subjects.RandomIDChars)
	minute := e.clock.Now().UTC().Truncate(time.Minute).Add(30 * time.Minute)
	ticket, err := subjects.NewSlotTicketID(agent, minute, subjects.NewTicketNonce())
	if err != nil {
		t.Fatal(err)
	}
	created := subjects.Stamp(e.clock.Now())
	rec := subjects.ConfirmedRecord(subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: stranger, Ticket: ticket,
		Type: subjects.Gold, Agent: agent, SlotTime: minute, CreatedAt: created, Deadline: created.Add(time.Hour)}, 0)
	if _, err := kv.Put(ctx, subjects.SlotKey(stranger, agent, minute), []byte(jsonBody(rec))); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, subjects.SlotKey(a.id, agent, minute.Add(time.Minute)), []byte(`{"state":"confirmed",`)); err != nil {
		t.Fatal(err)
	}
	if got := e.listAll(t, a, url.Values{"limit": {"2"}}); !slices.Equal(got, ids) {
		t.Fatalf("listed %v, want only the tenant's own %v", got, ids)
	}

	reads := newAgentReads(e.config(func(context.Context) error { return nil }))
	for _, c := range []struct{ limit, want int }{{1, 1}, {2, 2}, {maxPendingRecords, 3}} {
		got, err := reads.pending(ctx, a.id, c.limit)
		if err != nil || len(got) != c.want {
			t.Errorf("pending with limit %d: %d records, %v; want %d", c.limit, len(got), err, c.want)
		}
	}
}

// TestListTicketsFollowsAMove: tickets moved by a re-plan (their agent
// went away) are listed at their new agent at once, as GET answers them,
// whether or not an allocator has moved their rows yet; the agent filter
// follows them.
func TestListTicketsFollowsAMove(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{})
	a, gone := e.tenantWithAgent(t, "Movers", "ops@movers.example")
	e.startAllocator(t)
	ids := []string{e.createWhenReady(t, a, subjects.Gold)["ticket_id"].(string)}
	for range 2 {
		resp := e.create(t, a, subjects.Gold, nil)
		if resp.status != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.status, resp.raw)
		}
		ids = append(ids, resp.body["ticket_id"].(string))
	}
	slices.Sort(ids)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(e.listPage(t, a, "?status=allocated").ids) == len(ids)
	}, "the allocator to write the tickets")
	stays := e.addAgent(t, a)
	off := e.must(t, http.StatusOK, request{method: "PATCH", path: "/agents/" + gone, token: a.token,
		body: jsonBody(map[string]string{"agent_status": subjects.AgentUnavailable})})
	if replan, _ := off["replan"].(map[string]any); replan["moved"] != float64(len(ids)) {
		t.Fatalf("PATCH unavailable: replan %v, want %d moved", off["replan"], len(ids))
	}
	check := func() {
		t.Helper()
		page := e.listPage(t, a, "")
		if !slices.Equal(page.ids, ids) {
			t.Fatalf("listed %v, want %v", page.ids, ids)
		}
		for _, tk := range page.tickets {
			got := e.must(t, http.StatusOK, request{method: "GET", path: "/tickets/" + tk["ticket_id"].(string), token: a.token})
			if tk["agent_id"] != stays || tk["status"] != subjects.StatusAllocated || !reflect.DeepEqual(got, tk) {
				t.Errorf("listed %v, GET answers %v; want allocated at %s", tk, got, stays)
			}
		}
		if got := e.listAll(t, a, url.Values{"agent": {stays}}); !slices.Equal(got, ids) {
			t.Errorf("tickets of %s: %v, want %v", stays, got, ids)
		}
		if got := e.listAll(t, a, url.Values{"agent": {gone}}); len(got) != 0 {
			t.Errorf("tickets of %s, gone: %v, want none", gone, got)
		}
	}
	check()
	testkit.Eventually(t, 20*time.Second, func() bool {
		for _, id := range ids {
			if row, err := e.row(t, a.id, id); err != nil || row.Moves != 1 {
				return false
			}
		}
		return true
	}, "the allocator to move the rows")
	check()
}
