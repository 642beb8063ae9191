package tenants

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Listing a tenant's tickets from its database (GET /tickets): one
// bounded keyset query per page, in (created_at, id) order, ids compared
// bytewise (COLLATE "C", the order of index tickets_created_order and of
// Go's string comparison), so pages follow each other without gaps or
// repeats however the table grows meanwhile.

// MaxTicketPage bounds one page of ListTickets.
const MaxTicketPage = 200

// TicketFilter selects the tickets ListTickets answers; a zero member
// does not filter. Time ranges are half-open: [From, To).
type TicketFilter struct {
	Statuses                 []string // any of these (subjects.Status*)
	Type                     string   // subjects.Gold, Silver or Bronze
	Agent                    string
	CreatedFrom, CreatedTo   time.Time
	DeadlineFrom, DeadlineTo time.Time
	// Except leaves these tickets out: the caller answers them itself
	// (the ones the slot records say more about).
	Except []string
}

// Matches reports whether a ticket, as it stands (status, agent), passes
// f; Except is not looked at.
func (f TicketFilter) Matches(status, typ, agent string, created, deadline time.Time) bool {
	inRange := func(at, from, to time.Time) bool {
		return (from.IsZero() || !at.Before(from)) && (to.IsZero() || at.Before(to))
	}
	switch {
	case len(f.Statuses) > 0 && !slices.Contains(f.Statuses, status),
		f.Type != "" && typ != f.Type,
		f.Agent != "" && agent != f.Agent:
		return false
	}
	return inRange(created, f.CreatedFrom, f.CreatedTo) && inRange(deadline, f.DeadlineFrom, f.DeadlineTo)
}

// TicketKey is a ticket's place in the listing order.
type TicketKey struct {
	CreatedAt time.Time
	ID        string
}

// Less reports whether k comes before o in the listing order.
func (k TicketKey) Less(o TicketKey) bool {
	if c := k.CreatedAt.Compare(o.CreatedAt); c != 0 {
		return c < 0
	}
	return k.ID < o.ID
}

// Key is the row's place in the listing order.
func (r TicketRow) Key() TicketKey { return TicketKey{CreatedAt: r.CreatedAt, ID: r.ID} }

// ListTickets is t's tickets matching f that come after after (nil: from
// the first), in listing order, at most limit of them (1..MaxTicketPage;
// anything else is an error, the caller checks its input); more says
// whether others follow (one more row is read to know). The tenant
// database is the tenant's own, so another tenant's ticket can never be
// listed.
func (s *Tickets) ListTickets(ctx context.Context, t Tenant, f TicketFilter, after *TicketKey, limit int) (rows []TicketRow,
	more bool, err error) {
	return listTickets(ctx, s.pools, t, f, after, limit)
}

// ListTickets is Tickets.ListTickets over the agents' pools: the ingress
// routers hold the agents, and the tickets live in the same database.
func (a *Agents) ListTickets(ctx context.Context, t Tenant, f TicketFilter, after *TicketKey, limit int) (rows []TicketRow,
	more bool, err error) {
	return listTickets(ctx, a.pools, t, f, after, limit)
}

func listTickets(ctx context.Context, pools *Pools, t Tenant, f TicketFilter, after *TicketKey, limit int) ([]TicketRow, bool, error) {
	if limit < 1 || limit > MaxTicketPage {
		return nil, false, fmt.Errorf("list tickets of tenant %s: limit %d outside 1..%d", t.ID, limit, MaxTicketPage)
	}
	sql, args := listQuery(f, after, limit+1)
	var rows []TicketRow
	err := pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		rs, err := conn.Query(ctx, sql, args...)
		if err != nil {
			return pgErr("listing tickets", err)
		}
		defer rs.Close()
		for rs.Next() {
			r, err := scanTicketRow(rs)
			if err != nil {
				return err
			}
			rows = append(rows, r)
		}
		if err := rs.Err(); err != nil {
			return pgErr("listing tickets", err)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list tickets of tenant %s: %w", t.ID, err)
	}
	if len(rows) > limit {
		return rows[:limit], true, nil
	}
	return rows, false, nil
}

// listQuery is the page's SQL and arguments: every value is an argument,
// never spliced into the text.
func listQuery(f TicketFilter, after *TicketKey, limit int) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(f.Statuses) > 0 {
		where = append(where, "status = ANY("+arg(f.Statuses)+")")
	}
	if len(f.Except) > 0 {
		where = append(where, "id <> ALL("+arg(f.Except)+")")
	}
	if f.Type != "" {
		where = append(where, "type = "+arg(f.Type))
	}
	if f.Agent != "" {
		where = append(where, "sa_id = "+arg(f.Agent))
	}
	for _, b := range []struct {
		col, op string
		at      time.Time
	}{
		{"created_at", ">=", f.CreatedFrom}, {"created_at", "<", f.CreatedTo},
		{"deadline", ">=", f.DeadlineFrom}, {"deadline", "<", f.DeadlineTo},
	} {
		if !b.at.IsZero() {
			where = append(where, b.col+" "+b.op+" "+arg(b.at.UTC()))
		}
	}
	if after != nil {
		where = append(where, `(created_at, id COLLATE "C") > (`+arg(after.CreatedAt.UTC())+`, `+arg(after.ID)+`)`)
	}
	sql := `SELECT ` + listColumns + ` FROM tickets`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY created_at, id COLLATE "C" LIMIT ` + arg(limit)
	return sql, args
}

// listColumns are a TicketRow's columns, in scanTicketRow's order.
const listColumns = `id, type, status, COALESCE(sa_id, ''), start_time, created_at, deadline, cancelled_at, moves,
	COALESCE(subject, ''), COALESCE(description, '')`

func scanTicketRow(rs pgx.Rows) (TicketRow, error) {
	var r TicketRow
	var start *time.Time
	if err := rs.Scan(&r.ID, &r.Type, &r.Status, &r.Agent, &start, &r.CreatedAt, &r.Deadline, &r.CancelledAt,
		&r.Moves, &r.Subject, &r.Description); err != nil {
		return r, pgErr("reading listed ticket", err)
	}
	if start != nil {
		r.SlotTime = start.UTC()
	}
	r.CreatedAt, r.Deadline = r.CreatedAt.UTC(), r.Deadline.UTC()
	if r.CancelledAt != nil {
		u := r.CancelledAt.UTC()
		r.CancelledAt = &u
	}
	return r, nil
}

// MaxTicketRows bounds TicketRows' ids.
const MaxTicketRows = 10000

// TicketRows is the rows of those of ids t's database has, by id: one
// query for at most MaxTicketRows ids.
func (a *Agents) TicketRows(ctx context.Context, t Tenant, ids []string) (map[string]TicketRow, error) {
	if len(ids) > MaxTicketRows {
		return nil, fmt.Errorf("ticket rows of tenant %s: %d ids, more than %d", t.ID, len(ids), MaxTicketRows)
	}
	out := make(map[string]TicketRow, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	err := a.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		rs, err := conn.Query(ctx, `SELECT `+listColumns+` FROM tickets WHERE id = ANY($1)`, ids)
		if err != nil {
			return pgErr("reading tickets", err)
		}
		defer rs.Close()
		for rs.Next() {
			r, err := scanTicketRow(rs)
			if err != nil {
				return err
			}
			out[r.ID] = r
		}
		if err := rs.Err(); err != nil {
			return pgErr("reading tickets", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ticket rows of tenant %s: %w", t.ID, err)
	}
	return out, nil
}
