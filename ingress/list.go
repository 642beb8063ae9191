package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"tms/subjects"
	"tms/tenants"
)

// Listing tickets (docs/api.md, "Listing tickets"): GET /tickets and the
// NATS API's list_tickets, with filters and cursor pagination, from the
// tenant's database. A ticket is listed once an allocator has written it
// (usually within the allocators' batch wait after it was accepted); one
// only the slot records hold yet is not, while GET /tickets/{id} finds it.

// Bounds of a page.
const (
	defaultListLimit = 50
	maxListLimit     = tenants.MaxTicketPage
)

// listParams are a listing's parameters in their one canonical form,
// whichever transport brought them.
type listParams struct {
	filter tenants.TicketFilter
	limit  int
	after  *tenants.TicketKey
}

// listTicketsRequest is list_tickets' body on NATS: the query parameters
// of GET /tickets as members (status a list).
type listTicketsRequest struct {
	ClientID     *string   `json:"client_id"`
	Status       *[]string `json:"status"`
	Type         *string   `json:"type"`
	Agent        *string   `json:"agent"`
	CreatedFrom  *string   `json:"created_from"`
	CreatedTo    *string   `json:"created_to"`
	DeadlineFrom *string   `json:"deadline_from"`
	DeadlineTo   *string   `json:"deadline_to"`
	Limit        *int      `json:"limit"`
	Cursor       *string   `json:"cursor"`
}

func (q *listTicketsRequest) claimedClientID() *string { return q.ClientID }

// listBody is GET /tickets' 200. NextCursor is absent on the last page.
type listBody struct {
	Tickets    []ticketBody `json:"tickets"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// listQueryNames are GET /tickets' query parameters; any other is a 400.
var listQueryNames = []string{"status", "type", "agent", "created_from", "created_to", "deadline_from", "deadline_to",
	"limit", "cursor"}

// listRequestOfQuery reads GET /tickets' query into the NATS request's
// form, so both are checked by one function (listRequest.params). Every
// parameter but status is given at most once; status may be repeated and
// each value may be a comma list.
func listRequestOfQuery(u *url.URL) (listTicketsRequest, error) {
	var req listTicketsRequest
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return req, newError(http.StatusBadRequest, codeInvalidField, "query: %s does not parse", quote(u.RawQuery))
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !slices.Contains(listQueryNames, k) {
			return req, newError(http.StatusBadRequest, codeUnknownField, "query parameter %s: %s takes only %s",
				quote(k), quote(u.Path), strings.Join(listQueryNames, ", "))
		}
		if k != "status" && len(q[k]) != 1 {
			return req, errInvalidField(k, "given %d times; give it once", len(q[k]))
		}
	}
	if vs, ok := q["status"]; ok {
		statuses := []string{}
		for _, v := range vs {
			statuses = append(statuses, strings.Split(v, ",")...)
		}
		req.Status = &statuses
	}
	one := func(k string) *string {
		if vs, ok := q[k]; ok {
			return &vs[0]
		}
		return nil
	}
	req.Type, req.Agent, req.Cursor = one("type"), one("agent"), one("cursor")
	req.CreatedFrom, req.CreatedTo = one("created_from"), one("created_to")
	req.DeadlineFrom, req.DeadlineTo = one("deadline_from"), one("deadline_to")
	if v := one("limit"); v != nil {
		// Plain decimal digits only: no sign, no spaces, no leading zeros.
		n, err := strconv.Atoi(*v)
		if err != nil || strconv.Itoa(n) != *v {
			return req, errInvalidLimit()
		}
		req.Limit = &n
	}
	return req, nil
}

func errInvalidLimit() *apiError {
	return errInvalidField("limit", "must be a whole number from 1 to %d (default %d)", maxListLimit, defaultListLimit)
}

var errInvalidCursor = newError(http.StatusBadRequest, "invalid_cursor",
	"cursor: not a cursor of this listing (tampered, another client's, or used with other filters than the page it came from)")

// params checks every member and gives the canonical parameters of t's
// listing.
func (q listTicketsRequest) params(tenant string) (listParams, error) {
	p := listParams{limit: defaultListLimit}
	if q.Status != nil {
		if len(*q.Status) == 0 {
			return p, errInvalidField("status", "must name at least one of accepted, allocated, cancelled")
		}
		for _, s := range *q.Status {
			switch s {
			case subjects.StatusAccepted, subjects.StatusAllocated, subjects.StatusCancelled:
			default:
				return p, errInvalidField("status", "%s is none of accepted, allocated, cancelled", quote(s))
			}
			if !slices.Contains(p.filter.Statuses, s) {
				p.filter.Statuses = append(p.filter.Statuses, s)
			}
		}
		slices.Sort(p.filter.Statuses)
	}
	if q.Type != nil {
		switch *q.Type {
		case subjects.Gold, subjects.Silver, subjects.Bronze:
			p.filter.Type = *q.Type
		default:
			return p, errInvalidField("type", "%s is none of GOLD, SILVER, BRONZE", quote(*q.Type))
		}
	}
	if q.Agent != nil {
		if subjects.ValidID(*q.Agent) != nil {
			return p, errInvalidField("agent", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
		}
		p.filter.Agent = *q.Agent
	}
	var err error
	for _, b := range []struct {
		name string
		v    *string
		dst  *time.Time
	}{
		{"created_from", q.CreatedFrom, &p.filter.CreatedFrom}, {"created_to", q.CreatedTo, &p.filter.CreatedTo},
		{"deadline_from", q.DeadlineFrom, &p.filter.DeadlineFrom}, {"deadline_to", q.DeadlineTo, &p.filter.DeadlineTo},
	} {
		if b.v == nil {
			continue
		}
		if *b.dst, err = listInstant(b.name, *b.v); err != nil {
			return p, err
		}
	}
	if f := p.filter; !f.CreatedTo.IsZero() && !f.CreatedFrom.Before(f.CreatedTo) && !f.CreatedFrom.IsZero() {
		return p, errInvalidField("created_to", "must be after created_from")
	}
	if f := p.filter; !f.DeadlineTo.IsZero() && !f.DeadlineFrom.Before(f.DeadlineTo) && !f.DeadlineFrom.IsZero() {
		return p, errInvalidField("deadline_to", "must be after deadline_from")
	}
	if q.Limit != nil {
		if *q.Limit < 1 || *q.Limit > maxListLimit {
			return p, errInvalidLimit()
		}
		p.limit = *q.Limit
	}
	if q.Cursor != nil {
		key, err := decodeCursor(*q.Cursor, tenant, p.filter)
		if err != nil {
			return p, err
		}
		p.after = &key
	}
	return p, nil
}

// listInstant is a time parameter: RFC 3339 with a zone, years 1..9999
// (what Postgres and the cursor hold).
func listInstant(name, v string) (time.Time, error) {
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || at.Year() < 1 {
		return time.Time{}, errInvalidField(name, "%s is not an RFC 3339 instant (2026-01-02T15:04:05Z)", quote(v))
	}
	return subjects.Stamp(at), nil
}

// The cursor: base64url (no padding) of a version byte, the ticket's
// created_at in Unix microseconds (8 bytes, big endian), its id, and the
// first 16 bytes of a SHA-256 over the tenant, the filters and the rest.
// The hash is a check, not a secret: a cursor altered, made up, of
// another tenant or brought to other filters fails it (400
// invalid_cursor). It grants nothing: the listing only ever reads the
// session's tenant's own database.
const (
	cursorVersion = 1
	cursorSumLen  = 16
	// maxCursorLen bounds what is decoded at all.
	maxCursorLen = 256
)

func encodeCursor(tenant string, f tenants.TicketFilter, k tenants.TicketKey) string {
	b := []byte{cursorVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(k.CreatedAt.UnixMicro()))
	b = append(b, k.ID...)
	sum := cursorSum(tenant, f, b)
	return base64.RawURLEncoding.EncodeToString(append(b, sum[:cursorSumLen]...))
}

func decodeCursor(s, tenant string, f tenants.TicketFilter) (tenants.TicketKey, error) {
	if len(s) > maxCursorLen {
		return tenants.TicketKey{}, errInvalidCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 1+8+1+cursorSumLen || b[0] != cursorVersion {
		return tenants.TicketKey{}, errInvalidCursor
	}
	body, sum := b[:len(b)-cursorSumLen], b[len(b)-cursorSumLen:]
	want := cursorSum(tenant, f, body)
	if string(want[:cursorSumLen]) != string(sum) {
		return tenants.TicketKey{}, errInvalidCursor
	}
	k := tenants.TicketKey{CreatedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(body[1:9]))).UTC(), ID: string(body[9:])}
	if subjects.ValidID(k.ID) != nil {
		return tenants.TicketKey{}, errInvalidCursor
	}
	return k, nil
}

// cursorSum binds a cursor's body to its tenant and filters.
func cursorSum(tenant string, f tenants.TicketFilter, body []byte) [sha256.Size]byte {
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatInt(t.UnixMicro(), 10)
	}
	canon := strings.Join([]string{"tms.list_tickets.v1", tenant, strings.Join(f.Statuses, ","), f.Type, f.Agent,
		stamp(f.CreatedFrom), stamp(f.CreatedTo), stamp(f.DeadlineFrom), stamp(f.DeadlineTo)}, "\n")
	h := sha256.New()
	h.Write([]byte(canon))
	h.Write([]byte{0})
	h.Write(body)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// list is GET /tickets (list_tickets on NATS) for t, over the tenant's
// database: one page after p.after, and the cursor of the next when
// more follow (none leads to an empty page).
func (r *agentReads) list(ctx context.Context, t tenants.Tenant, p listParams) (answer, error) {
	if r.agents == nil {
		return answer{}, errNotConfigured
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rows, more, err := r.agents.ListTickets(gctx, t, p.filter, p.after, p.limit)
	if err != nil {
		return answer{}, fmt.Errorf("listing tickets: %w", err)
	}
	body := listBody{Tickets: make([]ticketBody, 0, len(rows))}
	for _, row := range rows {
		ev, status, _ := tenants.TicketState{Tenant: t.ID, Row: row, InDB: true}.Latest()
		body.Tickets = append(body.Tickets, ticketBody{TicketID: ev.Ticket, TicketType: ev.Type, Status: status,
			SlotTime: timestamp(ev.SlotTime), Deadline: timestamp(ev.Deadline), AgentID: ev.Agent,
			CreatedAt: timestamp(ev.CreatedAt)})
	}
	if more && len(rows) > 0 {
		body.NextCursor = encodeCursor(t.ID, p.filter, rows[len(rows)-1].Key())
	}
	return answer{status: http.StatusOK, body: body}, nil
}

// listTicketsHTTP is GET /tickets.
func (a *api) listTicketsHTTP(reads *agentReads) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := sessionFrom(r.Context()).tenant
		req, err := listRequestOfQuery(r.URL)
		if err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		p, err := req.params(t.ID)
		if err != nil {
			writeError(w, r, a.logger, err)
			return
		}
		ans, err := reads.list(r.Context(), t, p)
		a.respond(w, r, ans, err)
	}
}
