package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// Listing tickets (docs/api.md, "Listing tickets"): GET /tickets and the
// NATS API's list_tickets, with filters and cursor pagination, from the
// tenant's database plus the tickets its allocators have not written yet:
// the tenant's records after the allocators' ack floor in its slot
// shard's stream (at most maxPendingRecords of them).

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
// form, so both are checked by one function (listTicketsRequest.params). Every
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

// codeInvalidCursor is the 400 of a cursor this listing did not give.
const codeInvalidCursor = "invalid_cursor"

var errInvalidCursor = newError(http.StatusBadRequest, codeInvalidCursor,
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

// list is GET /tickets (list_tickets on NATS) for t: one page after
// p.after, and the cursor of the next when more follow (none leads to an
// empty page). The page merges the tenant database's rows with the
// tickets its slot records say more about (pending): those are left out
// of the query and answered as GET /tickets/{id} answers them, the
// record and the row together (tenants.TicketState.Latest), then
// filtered and placed in the same order.
func (r *agentReads) list(ctx context.Context, t tenants.Tenant, p listParams) (answer, error) {
	if r.agents == nil {
		return answer{}, errNotConfigured
	}
	pend, err := r.pending(ctx, t.ID, maxPendingRecords)
	if err != nil {
		return answer{}, err
	}
	ids := make([]string, 0, len(pend))
	for id := range pend {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	f := p.filter
	f.Except = ids
	rows, more, err := r.agents.ListTickets(gctx, t, f, p.after, p.limit)
	if err != nil {
		return answer{}, fmt.Errorf("listing tickets: %w", err)
	}
	type entry struct {
		key tenants.TicketKey
		ev  subjects.TicketEvent
		st  string
		// seq, when set, is the stream sequence of the pending record
		// whose content the answer shows (no row has it): read again
		// once the page is known (see pendingRecord).
		seq uint64
	}
	page := make([]entry, 0, len(rows)+len(ids))
	for _, row := range rows {
		ev, status, _ := tenants.TicketState{Tenant: t.ID, Row: row, InDB: true}.Latest()
		page = append(page, entry{key: row.Key(), ev: ev, st: status})
	}
	if len(ids) > 0 {
		written, err := r.agents.TicketRows(gctx, t, ids)
		if err != nil {
			return answer{}, fmt.Errorf("listing tickets: %w", err)
		}
		for _, id := range ids {
			pr := pend[id]
			st := tenants.TicketState{Tenant: t.ID, Event: pr.rec.Event(), Moves: pr.rec.Moves, InSlots: true}
			st.Row, st.InDB = written[id]
			ev, status, _ := st.Latest()
			key := tenants.TicketKey{CreatedAt: subjects.Stamp(ev.CreatedAt), ID: id}
			if p.after != nil && !p.after.Less(key) ||
				!p.filter.Matches(status, ev.Type, ev.Agent, ev.CreatedAt, ev.Deadline) {
				continue
			}
			e := entry{key: key, ev: ev, st: status}
			if pr.content && ev.Subject == "" && ev.Description == "" {
				e.seq = pr.seq // the record stands for the ticket (no row, or its cancel)
			}
			page = append(page, e)
		}
	}
	slices.SortFunc(page, func(x, y entry) int {
		switch {
		case x.key.Less(y.key):
			return -1
		case y.key.Less(x.key):
			return 1
		}
		return 0
	})
	if len(page) > p.limit {
		page, more = page[:p.limit], true
	}
	for i := range page {
		if page[i].seq == 0 {
			continue
		}
		rec, err := r.pendingContent(ctx, t.ID, page[i].seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Aged out or pushed out of its key's history since the
			// read: the ticket is in its database by now, and listed
			// with its text from there on the next read.
			r.logger.Warn("ticket listing: a pending record's content is gone", slog.String("tenant", t.ID),
				slog.String("ticket", page[i].ev.Ticket), slog.Any("err", err))
			continue
		}
		if err != nil {
			return answer{}, err
		}
		page[i].ev.Subject, page[i].ev.Description = rec.Subject, rec.Description
	}
	body := listBody{Tickets: make([]ticketBody, 0, len(page))}
	for _, e := range page {
		body.Tickets = append(body.Tickets, ticketBody{TicketID: e.ev.Ticket, TicketType: e.ev.Type, Status: e.st,
			SlotTime: timestamp(e.ev.SlotTime), Deadline: timestamp(e.ev.Deadline), AgentID: e.ev.Agent,
			CreatedAt: timestamp(e.ev.CreatedAt), Subject: e.ev.Subject, Description: e.ev.Description})
	}
	if more && len(page) > 0 {
		body.NextCursor = encodeCursor(t.ID, p.filter, page[len(page)-1].key)
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

// maxPendingRecords bounds the slot records one listing reads past the
// allocators' ack floor: the allocators' backlog
// of the tenant's shard, normally a batch wait's worth. Past it the rest
// of the backlog is left out (logged): those tickets are listed once
// written. It is tenants.MaxTicketRows, the most rows read back for them.
const maxPendingRecords = tenants.MaxTicketRows

// pendingBatch is how many records one fetch of the listing's reader
// asks for.
const pendingBatch = 500

// pendingRecord is the newest record of a ticket the allocators may not
// have written yet, without its content: up to maxPendingRecords of them
// are held while a listing is made, and a ticket's text may be 60 KiB
// of JSON, so only the page's tickets have theirs read again, by seq
// (pendingContent). content says that the record has some.
type pendingRecord struct {
	rec     subjects.SlotRecord
	seq     uint64
	content bool
}

// pendingContent is the record at seq of tenant's slot shard stream,
// read again for its content (a pending ticket on a listed page).
func (r *agentReads) pendingContent(ctx context.Context, tenant string, seq uint64) (subjects.SlotRecord, error) {
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	shard := subjects.SlotShard(tenant, r.shards)
	stream := subjects.SlotStream(shard)
	st, err := r.js.Stream(gctx, stream)
	if err != nil {
		return subjects.SlotRecord{}, fmt.Errorf("%w: reading %s: %w", tenants.ErrUnavailable, stream, err)
	}
	m, err := st.GetMsg(gctx, seq)
	if err != nil {
		return subjects.SlotRecord{}, fmt.Errorf("%w: reading %s at %d: %w", tenants.ErrUnavailable, stream, seq, err)
	}
	key := strings.TrimPrefix(m.Subject, "$KV."+subjects.SlotBucket(shard)+".")
	rec, err := subjects.DecodeSlotRecord(key, m.Data, subjects.CheckNames)
	if err != nil {
		return subjects.SlotRecord{}, fmt.Errorf("reading the content of a listed ticket at %s %d: %w", stream, seq, err)
	}
	return rec, nil
}

// pending is tenant's ticket records in its shard's stream after the
// allocators' ack floor, at most limit of them read, the newest record
// of each ticket (stream order): what the slot records say that the
// tenant database may not say yet. Everything before the floor is written (acked after its
// commit); after it, some may be too, which the merge tells from the
// rows. A record that does not decode is left out and logged, as the
// schedule does.
func (r *agentReads) pending(ctx context.Context, tenant string, limit int) (map[string]pendingRecord, error) {
	if r.js == nil {
		return nil, errNotConfigured
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	shard := subjects.SlotShard(tenant, r.shards)
	stream := subjects.SlotStream(shard)
	var floor uint64
	c, err := r.js.Consumer(gctx, stream, subjects.AllocatorConsumer(shard))
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, nil // no bucket yet: no record either
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		// No allocator has started on this shard: nothing is written from
		// it, every record is pending (the cap bounds the read).
	case err != nil:
		return nil, fmt.Errorf("%w: reading the allocators' consumer of %s: %w", tenants.ErrUnavailable, stream, err)
	default:
		floor = c.CachedInfo().AckFloor.Stream
	}
	prefix := "$KV." + subjects.SlotBucket(shard) + "."
	oc, err := r.js.OrderedConsumer(gctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + tenant + ".>"}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: floor + 1, InactiveThreshold: 10 * time.Second,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", tenants.ErrUnavailable, stream, err)
	}
	defer func() {
		// The server drops it after InactiveThreshold anyway; this only
		// spares it the wait.
		if info := oc.CachedInfo(); info != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
			_ = r.js.DeleteConsumer(dctx, stream, info.Name)
			dcancel()
		}
	}()
	out := map[string]pendingRecord{}
	read := 0
	for read < limit {
		batch, err := oc.FetchNoWait(min(pendingBatch, limit-read))
		if err != nil {
			return nil, fmt.Errorf("%w: reading %s: %w", tenants.ErrUnavailable, stream, err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			last = meta.NumPending == 0
			if op := m.Headers().Get("KV-Operation"); op != "" {
				continue // a delete or purge marker: nothing deletes in a slot bucket
			}
			key := strings.TrimPrefix(m.Subject(), prefix)
			rec, err := subjects.DecodeSlotRecord(key, m.Data(), subjects.CheckNames)
			if err != nil {
				r.logger.Warn("ticket listing: skipping a slot record", slog.String("tenant", tenant),
					slog.String("key", key), slog.Uint64("seq", meta.Sequence.Stream), slog.Any("err", err))
				continue
			}
			if rec.HasTicket() {
				content := rec.Subject != "" || rec.Description != ""
				rec.Subject, rec.Description = "", ""
				out[rec.Ticket] = pendingRecord{rec: rec, seq: meta.Sequence.Stream, content: content}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("%w: reading %s: %w", tenants.ErrUnavailable, stream, err)
		}
		read += n
		if n == 0 || last {
			return out, nil
		}
	}
	r.logger.Warn("ticket listing: the allocators' backlog is longer than the listing reads; its newest tickets are listed once written",
		slog.String("tenant", tenant), slog.Int("records_read", read))
	return out, nil
}
