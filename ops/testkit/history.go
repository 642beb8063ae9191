package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A History records what test clients sent and what they were told, so
// that after a fault has healed the tenants' databases can be checked
// against it (issue 4, point 2; docs/design.md I1-I3): every 201 ticket is in
// its tenant's database exactly once with the slot it was answered;
// nothing is in a database that no client asked for (a request with no
// answer explains at most one row); a 200 cancel left its row cancelled;
// no agent-minute holds two live tickets; every row's slot is inside its
// SLA.
//
// Every create gets its own Idempotency-Key, so a request that got no
// answer (a transport error, a timeout, a 5xx) can be resolved after the
// heal by sending it again with the same key: Resolve does that.
type History struct {
	mu   sync.Mutex
	reqs []*Request
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{} }

// Kind is what a request asked for.
type Kind string

// The requests a History records.
const (
	KindCreate Kind = "create"
	KindCancel Kind = "cancel"
)

// Answer is what one HTTP exchange gave back.
type Answer struct {
	Status int    // HTTP status; 0: no answer (transport error, timeout)
	Code   string // the body's "error" field, if any
	Err    string // the transport error, when Status is 0; a bad 201 body
	// Ticket is a 201's ticket (nil when the body did not parse: the
	// checker reports it).
	Ticket *TicketAnswer
	At     time.Time
}

// TicketAnswer is the ticket a create_ticket 201 named.
type TicketAnswer struct {
	ID, Type, Agent           string
	Slot, CreatedAt, Deadline time.Time
}

// Request is one create or cancel a client sent, with its answers.
type Request struct {
	Kind   Kind
	Tenant string
	Type   string // create: the ticket type
	Key    string // create: the Idempotency-Key
	Ticket string // cancel: the ticket id
	Sent   time.Time
	// First is the answer to the request itself; Final the last answer,
	// after Resolve's retries (First when there were none).
	First, Final Answer
	Retries      int

	client *Client
}

// definitive reports whether an answer settles a request: for a create, a
// 201, or a refusal that admits nothing (a 409 sla_unavailable, another
// 4xx but a twin in flight); for a cancel, 200 or 404. No answer and 5xx
// are not: the request may or may not have taken effect.
func (r *Request) definitive(a Answer) bool {
	switch {
	case a.Status == 0 || a.Status >= 500:
		return false
	case r.Kind == KindCreate && a.Status == http.StatusConflict && a.Code == "idempotency_key_in_use":
		return false
	}
	return true
}

// Answered reports whether the request's final answer settles it.
func (r *Request) Answered() bool { return r.definitive(r.Final) }

// Add records a request made outside a Client (tests of the checker, a
// NATS client). Final defaults to First.
func (h *History) Add(r Request) *Request {
	if r.Final.Status == 0 && r.Final.Err == "" && r.Final.At.IsZero() {
		r.Final = r.First
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reqs = append(h.reqs, &r)
	return &r
}

// Requests returns a snapshot of the recorded requests.
func (h *History) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Request, len(h.reqs))
	for i, r := range h.reqs {
		out[i] = *r
	}
	return out
}

// Client sends creates and cancels of one tenant over HTTP and records
// each in its History.
type Client struct {
	h       *History
	tenant  string
	token   string
	timeout time.Duration
	hc      *http.Client

	mu   sync.Mutex
	base string
}

// NewClient returns a client of tenant's public API at baseURL
// ("http://host:port") that gives every request timeout to answer. Its
// idle connections are closed when the test ends.
func (h *History) NewClient(t testing.TB, baseURL, tenant, token string, timeout time.Duration) *Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &Client{h: h, tenant: tenant, token: token, timeout: timeout, hc: &http.Client{Transport: tr}, base: baseURL}
}

// SetBaseURL points the client at another listener (a restarted process
// on new ports).
func (c *Client) SetBaseURL(u string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.base = u
}

func (c *Client) baseURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base
}

// Create sends one create_ticket with a fresh Idempotency-Key and records
// it.
func (c *Client) Create(ctx context.Context, ticketType string) *Request {
	r := &Request{Kind: KindCreate, Tenant: c.tenant, Type: ticketType, Key: "hist-" + RandomSuffix(24),
		Sent: time.Now(), client: c}
	r.First = c.send(ctx, r)
	r.Final = r.First
	c.h.mu.Lock()
	c.h.reqs = append(c.h.reqs, r)
	c.h.mu.Unlock()
	return r
}

// Cancel sends one cancel_ticket and records it.
func (c *Client) Cancel(ctx context.Context, ticket string) *Request {
	r := &Request{Kind: KindCancel, Tenant: c.tenant, Ticket: ticket, Sent: time.Now(), client: c}
	r.First = c.send(ctx, r)
	r.Final = r.First
	c.h.mu.Lock()
	c.h.reqs = append(c.h.reqs, r)
	c.h.mu.Unlock()
	return r
}

// send makes r's HTTP exchange once.
func (c *Client) send(ctx context.Context, r *Request) Answer {
	path, body := "/cancel_ticket", map[string]string{"ticket_id": r.Ticket}
	if r.Kind == KindCreate {
		path, body = "/create_ticket", map[string]string{"client_id": r.Tenant, "ticket_type": r.Type}
	}
	data, _ := json.Marshal(body)
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.baseURL()+path, bytes.NewReader(data))
	if err != nil {
		return Answer{Err: err.Error(), At: time.Now()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	if r.Key != "" {
		req.Header.Set("Idempotency-Key", r.Key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Answer{Err: err.Error(), At: time.Now()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		// The status came, the body did not: the server may have died
		// mid-answer, so this is no answer.
		return Answer{Err: "reading the answer: " + err.Error(), At: time.Now()}
	}
	a := Answer{Status: resp.StatusCode, At: time.Now()}
	var m struct {
		Error      string `json:"error"`
		TicketID   string `json:"ticket_id"`
		TicketType string `json:"ticket_type"`
		AgentID    string `json:"agent_id"`
		SlotTime   string `json:"slot_time"`
		CreatedAt  string `json:"created_at"`
		Deadline   string `json:"deadline"`
	}
	_ = json.Unmarshal(raw, &m)
	a.Code = m.Error
	if r.Kind == KindCreate && a.Status == http.StatusCreated {
		ta, err := parseTicketAnswer(m.TicketID, m.TicketType, m.AgentID, m.SlotTime, m.CreatedAt, m.Deadline)
		if err != nil {
			a.Err = fmt.Sprintf("201 body %q: %v", raw, err)
		} else {
			a.Ticket = ta
		}
	}
	return a
}

func parseTicketAnswer(id, typ, agent, slot, created, deadline string) (*TicketAnswer, error) {
	ta := &TicketAnswer{ID: id, Type: typ, Agent: agent}
	if id == "" || typ == "" || agent == "" {
		return nil, errors.New("ticket_id, ticket_type or agent_id missing")
	}
	for _, f := range []struct {
		s   string
		dst *time.Time
	}{{slot, &ta.Slot}, {created, &ta.CreatedAt}, {deadline, &ta.Deadline}} {
		v, err := time.Parse(time.RFC3339Nano, f.s)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	return ta, nil
}

// Resolve sends every request without a settling answer again (a create
// with its own Idempotency-Key, so it cannot make a second ticket; a
// cancel as it was) until each is settled or ctx ends, through the
// client that sent it (at its current base URL). Call it after the fault
// healed. It returns how many were resolved and how many are left.
func (h *History) Resolve(ctx context.Context) (resolved, left int) {
	h.mu.Lock()
	var open []*Request
	for _, r := range h.reqs {
		if !r.Answered() && r.client != nil {
			open = append(open, r)
		}
	}
	h.mu.Unlock()
	for len(open) > 0 {
		var still []*Request
		for _, r := range open {
			a := r.client.send(ctx, r)
			h.mu.Lock()
			r.Retries++
			r.Final = a
			h.mu.Unlock()
			if r.definitive(a) {
				resolved++
			} else {
				still = append(still, r)
			}
		}
		open = still
		if len(open) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return resolved, len(open)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return resolved, 0
}

// Row is one row of a tenant's tickets table, as the checker reads it.
type Row struct {
	ID, Type, Status string
	Agent            *string
	Start            *time.Time
	CreatedAt        time.Time
	Deadline         time.Time
}

// Reporter is what the checker reports violations to (a *testing.T).
type Reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// Summary counts what a check saw.
type Summary struct {
	Requests, Creates, Cancels int
	// Of the creates, by their first answer: Created (201), Rejected
	// (409 sla_unavailable), Refused (other 4xx), Unanswered (no answer,
	// 5xx, twin in flight); Resolved of the unanswered got a settling
	// answer from Resolve, Unresolved did not.
	Created, Rejected, Refused, Unanswered, Resolved, Unresolved int
	// Tickets answered 201 (first or resolved), rows read, their live and
	// cancelled counts, and rows no 201 named.
	Tickets, Rows, Live, CancelledRows, Extra int
	Violations                                int
}

func (s Summary) String() string {
	return fmt.Sprintf("requests %d (creates %d, cancels %d); creates first answered: 201 %d, 409 %d, other 4xx %d, unanswered %d "+
		"(resolved %d, unresolved %d); tickets answered 201 %d; rows %d (live %d, cancelled %d, no 201 named %d); violations %d",
		s.Requests, s.Creates, s.Cancels, s.Created, s.Rejected, s.Refused, s.Unanswered, s.Resolved, s.Unresolved,
		s.Tickets, s.Rows, s.Live, s.CancelledRows, s.Extra, s.Violations)
}

// DatabaseURLs maps a tenant to its database's URL: on the test server,
// the database prefix + tenant that tms --db-prefix prefix creates.
func DatabaseURLs(prefix string) func(tenant string) string {
	return func(tenant string) string {
		u, err := url.Parse(PostgresURL())
		if err != nil {
			return "invalid test Postgres URL: " + err.Error()
		}
		u.Path = "/" + prefix + tenant
		return u.String()
	}
}

// Check reads the tickets table of every tenant in the history (dbURL
// gives a tenant's database) and reports each violation through t (all of
// them, not just the first). Run it after the fault healed, Resolve
// returned and the allocators drained the stream.
func (h *History) Check(t Reporter, ctx context.Context, dbURL func(tenant string) string) Summary {
	t.Helper()
	rows := map[string][]Row{}
	for _, tenant := range h.tenants() {
		rs, err := ReadTicketRows(ctx, dbURL(tenant))
		if err != nil {
			t.Errorf("history check: reading the tickets of tenant %s: %v", tenant, err)
			return Summary{Violations: 1}
		}
		rows[tenant] = rs
	}
	return h.CheckRows(t, rows)
}

func (h *History) tenants() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, r := range h.reqs {
		if !seen[r.Tenant] {
			seen[r.Tenant] = true
			out = append(out, r.Tenant)
		}
	}
	sort.Strings(out)
	return out
}

// ReadTicketRows reads every row of the tickets table at dbURL.
func ReadTicketRows(ctx context.Context, dbURL string) ([]Row, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT id, type, status, start_time, deadline, created_at, sa_id FROM tickets ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Row, error) {
		var r Row
		err := row.Scan(&r.ID, &r.Type, &r.Status, &r.Start, &r.Deadline, &r.CreatedAt, &r.Agent)
		return r, err
	})
}

// slaOf is docs/api.md's SLA table; the checker keeps its own copy on purpose.
var slaOf = map[string]time.Duration{"GOLD": 2 * time.Hour, "SILVER": 4 * time.Hour, "BRONZE": 8 * time.Hour}

// CheckRows is Check against rows already read (tenant -> its rows).
func (h *History) CheckRows(t Reporter, rows map[string][]Row) Summary {
	t.Helper()
	reqs := h.Requests()
	var s Summary
	fail := func(format string, args ...any) {
		t.Helper()
		s.Violations++
		t.Errorf("history check: "+format, args...)
	}

	type tenantTicket struct{ tenant, id string }
	answered := map[tenantTicket]*TicketAnswer{}
	answeredBy := map[tenantTicket]string{} // the key that got it
	unansweredFirst := map[string]int{}     // tenant -> creates whose first answer settled nothing
	unresolved := map[string]int{}          // tenant -> creates still unsettled
	cancelOK := map[tenantTicket]bool{}     // a cancel answered 200
	cancelMaybe := map[tenantTicket]bool{}  // a cancel with no settling answer
	s.Requests = len(reqs)
	for i := range reqs {
		r := &reqs[i]
		if r.Kind == KindCancel {
			s.Cancels++
			k := tenantTicket{r.Tenant, r.Ticket}
			switch {
			case r.Final.Status == http.StatusOK:
				cancelOK[k] = true
			case !r.definitive(r.Final):
				cancelMaybe[k] = true
			}
			continue
		}
		s.Creates++
		switch f := r.First; {
		case f.Status == http.StatusCreated:
			s.Created++
		case !r.definitive(f):
			s.Unanswered++
			unansweredFirst[r.Tenant]++
			if r.Answered() {
				s.Resolved++
			} else {
				s.Unresolved++
				unresolved[r.Tenant]++
			}
		case f.Status == http.StatusConflict:
			s.Rejected++
		default:
			s.Refused++
		}
		if r.Final.Status != http.StatusCreated {
			continue
		}
		if r.Final.Ticket == nil {
			fail("tenant %s: create (key %s) answered 201 with a body that does not parse: %s", r.Tenant, r.Key, r.Final.Err)
			continue
		}
		k := tenantTicket{r.Tenant, r.Final.Ticket.ID}
		if other, dup := answeredBy[k]; dup {
			fail("tenant %s: ticket %s answered 201 to two requests (keys %s and %s)", r.Tenant, k.id, other, r.Key)
			continue
		}
		answered[k], answeredBy[k] = r.Final.Ticket, r.Key
		checkWindow(fail, "answered 201", r.Tenant, r.Final.Ticket.ID, r.Final.Ticket.Type,
			&r.Final.Ticket.Slot, r.Final.Ticket.CreatedAt, r.Final.Ticket.Deadline)
		if r.Final.Ticket.Type != r.Type {
			fail("tenant %s: ticket %s answered as %s for a %s request", r.Tenant, k.id, r.Final.Ticket.Type, r.Type)
		}
	}
	s.Tickets = len(answered)

	tenantNames := make([]string, 0, len(rows))
	for tenant := range rows {
		tenantNames = append(tenantNames, tenant)
	}
	sort.Strings(tenantNames)
	inDB := map[tenantTicket]Row{}
	for _, tenant := range tenantNames {
		type minute struct {
			agent string
			at    time.Time
		}
		live := map[minute][]string{}
		var extra, extraLive []Row
		for _, row := range rows[tenant] {
			s.Rows++
			k := tenantTicket{tenant, row.ID}
			if _, dup := inDB[k]; dup {
				fail("tenant %s: ticket %s is in the database more than once", tenant, row.ID)
				continue
			}
			inDB[k] = row
			checkWindow(fail, "row", tenant, row.ID, row.Type, row.Start, row.CreatedAt, row.Deadline)
			isLive := row.Status != "cancelled"
			if isLive {
				s.Live++
				if row.Agent == nil || row.Start == nil {
					fail("tenant %s: live ticket %s has no agent or start time", tenant, row.ID)
				} else {
					m := minute{*row.Agent, row.Start.UTC()}
					live[m] = append(live[m], row.ID)
				}
			} else {
				s.CancelledRows++
			}
			if _, ok := answered[k]; !ok {
				s.Extra++
				extra = append(extra, row)
				if isLive {
					extraLive = append(extraLive, row)
				}
			}
		}
		minutes := make([]minute, 0, len(live))
		for m := range live {
			minutes = append(minutes, m)
		}
		sort.Slice(minutes, func(i, j int) bool {
			if minutes[i].agent != minutes[j].agent {
				return minutes[i].agent < minutes[j].agent
			}
			return minutes[i].at.Before(minutes[j].at)
		})
		for _, m := range minutes {
			if ids := live[m]; len(ids) > 1 {
				fail("tenant %s: agent %s at %s holds %d live tickets: %v", tenant, m.agent,
					m.at.Format(time.RFC3339), len(ids), ids)
			}
		}
		// A row no client was answered for must come from a request that
		// got no answer, one row each; a live one only from a request that
		// is still unsettled (a settled one has its own answer).
		if len(extra) > unansweredFirst[tenant] {
			fail("tenant %s: %d rows no client was answered 201 for, but only %d creates went unanswered: %s",
				tenant, len(extra), unansweredFirst[tenant], describeRows(extra))
		}
		if len(extraLive) > unresolved[tenant] {
			fail("tenant %s: %d live rows no client was answered 201 for, but only %d creates are unresolved: %s",
				tenant, len(extraLive), unresolved[tenant], describeRows(extraLive))
		}
	}

	keys := make([]tenantTicket, 0, len(answered))
	for k := range answered {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].tenant != keys[j].tenant {
			return keys[i].tenant < keys[j].tenant
		}
		return keys[i].id < keys[j].id
	})
	for _, k := range keys {
		a := answered[k]
		row, ok := inDB[k]
		if !ok {
			fail("tenant %s: ticket %s answered 201 (%s, agent %s at %s) is not in the database", k.tenant, k.id,
				a.Type, a.Agent, a.Slot.Format(time.RFC3339))
			continue
		}
		switch {
		case row.Agent == nil || *row.Agent != a.Agent || row.Start == nil || !row.Start.Equal(a.Slot):
			fail("tenant %s: ticket %s answered agent %s at %s, the database has %s", k.tenant, k.id,
				a.Agent, a.Slot.Format(time.RFC3339), describeRow(row))
		case row.Type != a.Type || !row.CreatedAt.Equal(a.CreatedAt) || !row.Deadline.Equal(a.Deadline):
			fail("tenant %s: ticket %s answered %s created %s deadline %s, the database has %s", k.tenant, k.id,
				a.Type, a.CreatedAt.Format(time.RFC3339Nano), a.Deadline.Format(time.RFC3339Nano), describeRow(row))
		}
		switch {
		case cancelOK[k] && row.Status != "cancelled":
			fail("tenant %s: ticket %s was cancelled (200) but its row is %s", k.tenant, k.id, row.Status)
		case !cancelOK[k] && !cancelMaybe[k] && row.Status == "cancelled":
			fail("tenant %s: ticket %s was never cancelled but its row is cancelled", k.tenant, k.id)
		}
	}
	for i := range reqs {
		r := &reqs[i]
		if r.Kind == KindCancel && r.Final.Status == http.StatusNotFound {
			if _, ok := answered[tenantTicket{r.Tenant, r.Ticket}]; ok {
				fail("tenant %s: cancel of ticket %s, answered 201 before, got 404", r.Tenant, r.Ticket)
			}
		}
	}
	return s
}

// checkWindow checks docs/api.md's window rule for one ticket: a whole-minute
// slot with slot >= created_at and slot + 1m <= deadline = created_at +
// SLA(type).
func checkWindow(fail func(string, ...any), what, tenant, id, typ string, slot *time.Time, createdAt, deadline time.Time) {
	sla, ok := slaOf[typ]
	switch {
	case !ok:
		fail("tenant %s: %s %s has type %q", tenant, what, id, typ)
	case slot == nil:
		fail("tenant %s: %s %s has no slot", tenant, what, id)
	case !slot.Equal(slot.Truncate(time.Minute)):
		fail("tenant %s: %s %s has slot %s, not a whole minute", tenant, what, id, slot.Format(time.RFC3339Nano))
	case !deadline.Equal(createdAt.Add(sla)):
		fail("tenant %s: %s %s (%s) has deadline %s, want created_at %s + %s", tenant, what, id, typ,
			deadline.Format(time.RFC3339Nano), createdAt.Format(time.RFC3339Nano), sla)
	case slot.Before(createdAt) || slot.Add(time.Minute).After(deadline):
		fail("tenant %s: %s %s (%s) has slot %s outside its window [%s, %s]", tenant, what, id, typ,
			slot.Format(time.RFC3339), createdAt.Format(time.RFC3339Nano), deadline.Format(time.RFC3339Nano))
	}
}

func describeRow(r Row) string {
	agent, start := "<null>", "<null>"
	if r.Agent != nil {
		agent = *r.Agent
	}
	if r.Start != nil {
		start = r.Start.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("{%s %s %s agent %s at %s created %s deadline %s}", r.ID, r.Type, r.Status, agent, start,
		r.CreatedAt.UTC().Format(time.RFC3339Nano), r.Deadline.UTC().Format(time.RFC3339Nano))
}

func describeRows(rs []Row) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = describeRow(r)
	}
	return strings.Join(parts, ", ")
}
