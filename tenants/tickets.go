package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tms/subjects"
)

// TicketRow is one ticket as the tenant's database holds it.
type TicketRow struct {
	ID, Type, Status, Agent       string // Status: subjects.StatusAllocated or StatusCancelled
	SlotTime, CreatedAt, Deadline time.Time
	CancelledAt                   *time.Time
	// Moves is how often the ticket was moved to another agent-minute
	// (ApplyMoved); Agent and SlotTime are where it is now.
	Moves int
	// Subject and Description are the ticket's content ("": none, NULL
	// in the table).
	Subject, Description string
}

// Tickets writes accepted tickets and their cancels into each tenant's
// database, as the allocator workers apply ticket events. Every write is
// idempotent by ticket id and insensitive to order: the stream redelivers,
// and several workers may see a ticket's create and cancel in either
// order. A cancel wins whenever it comes.
//
// Each write locks the agent-minute's slots row first, so a cancel that
// frees a minute and a create that takes it are serialized, and the
// slots row always ends up saying whether a live ticket holds the minute.
type Tickets struct {
	pools *Pools
	log   *slog.Logger
}

// NewTickets returns the ticket store over pools.
func NewTickets(pools *Pools, logger *slog.Logger) *Tickets {
	return &Tickets{pools: pools, log: orDiscard(logger).With(slog.String("component", "tickets"))}
}

// conflictRetries bounds how often ApplyCreated looks again for the live
// holder of a minute that vanished (was cancelled) between the refused
// insert and the look-up.
const conflictRetries = 3

// slotRowID is the slots.id of an agent-minute: one row per agent and
// minute, the same id whoever writes it first.
func slotRowID(agent string, minute time.Time) string {
	return agent + "." + minute.UTC().Format("200601021504")
}

// checkEvent refuses what no database write should ever accept
// (subjects.TicketEvent.CheckRow; its errors are ErrInvalidTicket); the
// allocator has validated far more before calling.
func checkEvent(ev subjects.TicketEvent) error { return ev.CheckRow() }

// lockSlot makes sure the agent-minute's slots row exists (available
// unless a ticket takes it later in the transaction) and locks it.
func lockSlot(ctx context.Context, tx pgx.Tx, id, agent string, minute time.Time) error {
	if _, err := tx.Exec(ctx, `INSERT INTO slots (id, sa_id, time, available) VALUES ($1, $2, $3, 'available')
		ON CONFLICT DO NOTHING`, id, agent, minute.UTC()); err != nil {
		if pgCode(err) == "23503" { // foreign_key_violation: no such agent
			return fmt.Errorf("%w: agent %s is not in the tenant database", ErrInvalidTicket, agent)
		}
		return pgErr("inserting slot row", err)
	}
	var got string
	if err := tx.QueryRow(ctx, `SELECT id FROM slots WHERE id = $1 FOR UPDATE`, id).Scan(&got); err != nil {
		return pgErr("locking slot row", err)
	}
	return nil
}

// ApplyCreated writes an accepted ticket as allocated and marks its slot
// unavailable, in one transaction. A ticket already present (a repeat, or
// a cancel that came first) is left as it is. Another live ticket on the
// same agent-minute is a *SlotConflictError naming it; nothing is written
// then.
func (s *Tickets) ApplyCreated(ctx context.Context, t Tenant, ev subjects.TicketEvent) error {
	if err := checkEvent(ev); err != nil {
		return err
	}
	slotID := slotRowID(ev.Agent, ev.SlotTime)
	for try := 0; ; try++ {
		var inserted bool
		err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
			return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if err := lockSlot(ctx, tx, slotID, ev.Agent, ev.SlotTime); err != nil {
					return err
				}
				tag, err := tx.Exec(ctx, `INSERT INTO tickets
					(id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id, subject, description)
					VALUES ($1, $2, 'allocated', $3, $4, $5, $6, $7, $8, NULLIF($9, ''), NULLIF($10, ''))
					ON CONFLICT (id) DO NOTHING`,
					ev.Ticket, ev.Type, ev.CreatedAt.UTC(), ev.Deadline.UTC(), ev.SlotTime.UTC(),
					ev.SlotTime.UTC().Add(time.Minute), ev.Agent, slotID, ev.Subject, ev.Description)
				if err != nil {
					return err // a unique violation is looked at below, after the rollback
				}
				if inserted = tag.RowsAffected() == 1; !inserted {
					return nil
				}
				if _, err := tx.Exec(ctx, `UPDATE slots SET available = 'unavailable' WHERE id = $1`, slotID); err != nil {
					return pgErr("marking slot unavailable", err)
				}
				return nil
			})
		})
		if err == nil {
			if inserted {
				s.log.Debug("ticket allocated", slog.String("tenant", t.ID), slog.String("ticket", ev.Ticket),
					slog.String("agent", ev.Agent), slog.Time("slot_time", ev.SlotTime))
			}
			return nil
		}
		if !minuteTaken(err) {
			return fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, pgWrap("writing ticket", err))
		}
		holder, herr := s.liveHolder(ctx, t, ev.Agent, ev.SlotTime)
		if herr != nil {
			return fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, herr)
		}
		if holder != "" {
			return fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, &SlotConflictError{Ticket: holder})
		}
		if try >= conflictRetries {
			return fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, pgWrap("writing ticket", err))
		}
		// The holder was cancelled meanwhile: the minute is free again.
	}
}

// minuteTaken reports the unique violation of tickets_agent_minute: a
// live ticket already holds the agent-minute.
func minuteTaken(err error) bool {
	pe, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pe.Code == "23505" && pe.ConstraintName == "tickets_agent_minute"
}

// pgWrap is pgErr for errors that may already carry ErrInvalidTicket or
// ErrUnavailable from a step inside the transaction.
func pgWrap(op string, err error) error {
	if errors.Is(err, ErrInvalidTicket) || errors.Is(err, ErrUnavailable) {
		return err
	}
	return pgErr(op, err)
}

// liveHolder returns the live ticket on an agent-minute, or "".
func (s *Tickets) liveHolder(ctx context.Context, t Tenant, agent string, minute time.Time) (string, error) {
	var id string
	err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		err := conn.QueryRow(ctx, `SELECT id FROM tickets WHERE sa_id = $1 AND start_time = $2 AND status <> 'cancelled'`,
			agent, minute.UTC()).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return pgErr("finding the live ticket of a slot", err)
		}
		return nil
	})
	return id, err
}

// ApplyCancelled marks a ticket cancelled and frees its slot unless
// another live ticket holds it, in one transaction. If the create has not
// been written yet, the whole row is written as cancelled, and a later
// ApplyCreated leaves it so. A repeat changes nothing; the first cancel's
// cancelled_at stays.
func (s *Tickets) ApplyCancelled(ctx context.Context, t Tenant, ev subjects.TicketEvent) error {
	if err := checkEvent(ev); err != nil {
		return err
	}
	cancelledAt := time.Now().UTC()
	if ev.CancelledAt != nil {
		cancelledAt = ev.CancelledAt.UTC()
	}
	var changed bool
	var err error
	for try := 0; ; try++ {
		err = s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
			return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				return s.cancelTx(ctx, tx, ev, cancelledAt, &changed)
			})
		})
		if !errors.Is(err, errMoveRaced) || try >= conflictRetries {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("apply cancelled ticket %s of tenant %s: %w", ev.Ticket, t.ID, pgWrap("cancelling ticket", err))
	}
	if changed {
		s.log.Debug("ticket cancelled", slog.String("tenant", t.ID), slog.String("ticket", ev.Ticket))
	}
	return nil
}

// cancelTx is ApplyCancelled's transaction. The row's minute is read,
// its slots row locked, then the row read again under its lock: a move
// committed in between (ApplyMoved) changed the minute to free, and the
// cancel is tried again (errMoveRaced).
func (s *Tickets) cancelTx(ctx context.Context, tx pgx.Tx, ev subjects.TicketEvent, cancelledAt time.Time, changed *bool) error {
	// A ticket already written keeps its own minute: free that one
	// even if this event disagrees with it.
	agent, minute := ev.Agent, ev.SlotTime.UTC()
	const readRow = `SELECT sa_id, start_time FROM tickets WHERE id = $1`
	var before ticketPlace
	err := tx.QueryRow(ctx, readRow, ev.Ticket).Scan(&before.agent, &before.minute)
	exists := err == nil
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return pgErr("reading ticket", err)
	case before.agent != nil && before.minute != nil:
		agent, minute = *before.agent, before.minute.UTC()
	}
	slotID := slotRowID(agent, minute)
	if err := lockSlot(ctx, tx, slotID, agent, minute); err != nil {
		return err
	}
	var now ticketPlace
	err = tx.QueryRow(ctx, readRow+` FOR UPDATE`, ev.Ticket).Scan(&now.agent, &now.minute)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if exists {
			return errMoveRaced
		}
	case err != nil:
		return pgErr("locking ticket", err)
	case !exists || !now.same(before):
		return errMoveRaced
	}
	// A cancelled row is outside the partial unique index, so this
	// never conflicts with the minute's new holder.
	// A row already written keeps its content: the cancel only changes
	// its status.
	tag, err := tx.Exec(ctx, `INSERT INTO tickets
		(id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id, cancelled_at, subject, description)
		VALUES ($1, $2, 'cancelled', $3, $4, $5, $6, $7, $8, $9, NULLIF($10, ''), NULLIF($11, ''))
		ON CONFLICT (id) DO UPDATE SET status = 'cancelled', cancelled_at = EXCLUDED.cancelled_at
		WHERE tickets.status <> 'cancelled'`,
		ev.Ticket, ev.Type, ev.CreatedAt.UTC(), ev.Deadline.UTC(), ev.SlotTime.UTC(),
		ev.SlotTime.UTC().Add(time.Minute), ev.Agent, slotID, cancelledAt, ev.Subject, ev.Description)
	if err != nil {
		return pgErr("writing cancelled ticket", err)
	}
	*changed = tag.RowsAffected() == 1
	if _, err := tx.Exec(ctx, `UPDATE slots SET available = 'available'
		WHERE id = $1 AND available <> 'available' AND NOT EXISTS (
			SELECT 1 FROM tickets WHERE sa_id = $2 AND start_time = $3 AND status <> 'cancelled')`,
		slotID, agent, minute); err != nil {
		return pgErr("freeing slot", err)
	}
	return nil
}

// Get reads one ticket from t's database.
func (s *Tickets) Get(ctx context.Context, t Tenant, id string) (TicketRow, error) {
	if subjects.ValidID(id) != nil {
		return TicketRow{}, ErrTicketNotFound
	}
	var r TicketRow
	err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		var start *time.Time
		err := conn.QueryRow(ctx, `SELECT `+listColumns+` FROM tickets WHERE id = $1`, id).
			Scan(&r.ID, &r.Type, &r.Status, &r.Agent, &start, &r.CreatedAt, &r.Deadline, &r.CancelledAt, &r.Moves,
				&r.Subject, &r.Description)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrTicketNotFound
		}
		if err != nil {
			return pgErr("reading ticket", err)
		}
		if start != nil {
			r.SlotTime = start.UTC()
		}
		r.CreatedAt, r.Deadline = r.CreatedAt.UTC(), r.Deadline.UTC()
		if r.CancelledAt != nil {
			u := r.CancelledAt.UTC()
			r.CancelledAt = &u
		}
		return nil
	})
	if errors.Is(err, ErrTicketNotFound) {
		return TicketRow{}, ErrTicketNotFound
	}
	if err != nil {
		return TicketRow{}, fmt.Errorf("get ticket %s of tenant %s: %w", id, t.ID, err)
	}
	return r, nil
}
