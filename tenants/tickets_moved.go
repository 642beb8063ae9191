package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tms/subjects"
)

// MoveResult is what ApplyMoved did to a ticket's row.
type MoveResult struct {
	// Applied: the row now follows the move, updated from fewer moves or
	// inserted (its create not written yet). False when the row already
	// had as many moves or more, or is cancelled.
	Applied bool
	// FromAgent and FromSlotTime are where the row was before the move;
	// empty when it was inserted (or had no slot).
	FromAgent    string
	FromSlotTime time.Time
}

// errMoveRaced: the row changed between the read that chose the slots to
// lock and the locked read; the move is tried again.
var errMoveRaced = errors.New("ticket row changed while its move was prepared")

// ApplyMoved moves a ticket's row to ev's agent-minute, the slot record of
// a ticket moved moves times (subjects.SlotRecord.Moves > 0), in one
// transaction: the row takes the new agent, slot row, start and end and
// the count of moves, the new minute's slots row is marked unavailable and
// the old one available unless another live ticket holds it. Only a row
// with fewer moves follows, so a record delivered late never moves a row
// back; a cancelled row stays cancelled. A ticket without a row (its
// create not written yet) is inserted as its create, with moves. Another
// live ticket on the new minute is a *SlotConflictError naming it;
// nothing is written then.
//
// The slots rows are locked before the ticket row, in id order, as the
// other writes lock them (a create locks its minute before it inserts, a
// cancel before it updates): two writes never wait for each other in a
// circle.
func (s *Tickets) ApplyMoved(ctx context.Context, t Tenant, ev subjects.TicketEvent, moves int) (MoveResult, error) {
	if err := checkEvent(ev); err != nil {
		return MoveResult{}, err
	}
	if ev.Event != subjects.TicketCreated || moves <= 0 {
		return MoveResult{}, fmt.Errorf("%w: a move needs a created event with moves > 0, got %s with %d", ErrInvalidTicket,
			ev.Event, moves)
	}
	for try := 0; ; try++ {
		res, err := s.applyMoved(ctx, t, ev, moves)
		switch {
		case err == nil:
			if res.Applied {
				s.log.Debug("ticket moved", slog.String("tenant", t.ID), slog.String("ticket", ev.Ticket),
					slog.String("agent", ev.Agent), slog.Time("slot_time", ev.SlotTime), slog.Int("moves", moves),
					slog.String("from_agent", res.FromAgent), slog.Time("from_slot_time", res.FromSlotTime))
			}
			return res, nil
		case errors.Is(err, errMoveRaced) && try < conflictRetries:
			continue
		case !minuteTaken(err):
			return MoveResult{}, fmt.Errorf("apply moved ticket %s of tenant %s: %w", ev.Ticket, t.ID, pgWrap("moving ticket", err))
		}
		holder, herr := s.liveHolder(ctx, t, ev.Agent, ev.SlotTime)
		if herr != nil {
			return MoveResult{}, fmt.Errorf("apply moved ticket %s of tenant %s: %w", ev.Ticket, t.ID, herr)
		}
		if holder != "" && holder != ev.Ticket {
			return MoveResult{}, fmt.Errorf("apply moved ticket %s of tenant %s: %w", ev.Ticket, t.ID, &SlotConflictError{Ticket: holder})
		}
		if try >= conflictRetries {
			return MoveResult{}, fmt.Errorf("apply moved ticket %s of tenant %s: %w", ev.Ticket, t.ID, pgWrap("moving ticket", err))
		}
		// The holder went meanwhile: the minute is free again.
	}
}

// ticketPlace is the part of a ticket row a move reads.
type ticketPlace struct {
	agent  *string
	minute *time.Time
	status string
	moves  int
}

// same reports whether two reads of a row agree on its slot.
func (p ticketPlace) same(q ticketPlace) bool {
	return (p.agent == nil) == (q.agent == nil) && (p.agent == nil || *p.agent == *q.agent) &&
		(p.minute == nil) == (q.minute == nil) && (p.minute == nil || p.minute.Equal(*q.minute))
}

// stays reports whether a move to moves leaves the row as it is.
func (p ticketPlace) stays(moves int) bool {
	return p.status == subjects.StatusCancelled || p.moves >= moves
}

func (s *Tickets) applyMoved(ctx context.Context, t Tenant, ev subjects.TicketEvent, moves int) (MoveResult, error) {
	var res MoveResult
	newSlot := slotRowID(ev.Agent, ev.SlotTime)
	start := ev.SlotTime.UTC()
	err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			const readRow = `SELECT sa_id, start_time, status, moves FROM tickets WHERE id = $1`
			var before ticketPlace
			err := tx.QueryRow(ctx, readRow, ev.Ticket).Scan(&before.agent, &before.minute, &before.status, &before.moves)
			exists := err == nil
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return pgErr("reading ticket", err)
			case before.stays(moves):
				return nil
			}
			type slot struct {
				id, agent string
				minute    time.Time
			}
			slots := []slot{{newSlot, ev.Agent, start}}
			if exists && before.agent != nil && before.minute != nil {
				if old := slotRowID(*before.agent, *before.minute); old != newSlot {
					slots = append(slots, slot{old, *before.agent, before.minute.UTC()})
				}
			}
			slices.SortFunc(slots, func(a, b slot) int {
				switch {
				case a.id < b.id:
					return -1
				case a.id > b.id:
					return 1
				}
				return 0
			})
			for _, sl := range slots {
				if err := lockSlot(ctx, tx, sl.id, sl.agent, sl.minute); err != nil {
					return err
				}
			}
			if !exists {
				tag, err := tx.Exec(ctx, `INSERT INTO tickets
					(id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id, moves, subject, description)
					VALUES ($1, $2, 'allocated', $3, $4, $5, $6, $7, $8, $9, NULLIF($10, ''), NULLIF($11, ''))
					ON CONFLICT (id) DO NOTHING`,
					ev.Ticket, ev.Type, ev.CreatedAt.UTC(), ev.Deadline.UTC(), start, start.Add(time.Minute), ev.Agent,
					newSlot, moves, ev.Subject, ev.Description)
				if err != nil {
					return err // a unique violation is looked at after the rollback
				}
				if tag.RowsAffected() == 0 {
					return errMoveRaced // written meanwhile: move that row instead
				}
				res.Applied = true
				return markUnavailable(ctx, tx, newSlot)
			}
			var now ticketPlace
			if err := tx.QueryRow(ctx, readRow+` FOR UPDATE`, ev.Ticket).Scan(&now.agent, &now.minute, &now.status,
				&now.moves); err != nil {
				return pgErr("locking ticket", err)
			}
			if now.stays(moves) {
				return nil
			}
			if !now.same(before) {
				return errMoveRaced
			}
			if _, err := tx.Exec(ctx, `UPDATE tickets SET sa_id = $2, slot_id = $3, start_time = $4, end_time = $5, moves = $6
				WHERE id = $1 AND status <> 'cancelled' AND moves < $6`,
				ev.Ticket, ev.Agent, newSlot, start, start.Add(time.Minute), moves); err != nil {
				return err // a unique violation is looked at after the rollback
			}
			res.Applied = true
			if now.agent != nil && now.minute != nil {
				res.FromAgent, res.FromSlotTime = *now.agent, now.minute.UTC()
			}
			if err := markUnavailable(ctx, tx, newSlot); err != nil {
				return err
			}
			for _, sl := range slots {
				if sl.id == newSlot {
					continue
				}
				if _, err := tx.Exec(ctx, `UPDATE slots SET available = 'available'
					WHERE id = $1 AND available <> 'available' AND NOT EXISTS (
						SELECT 1 FROM tickets WHERE sa_id = $2 AND start_time = $3 AND status <> 'cancelled')`,
					sl.id, sl.agent, sl.minute); err != nil {
					return pgErr("freeing slot", err)
				}
			}
			return nil
		})
	})
	if err != nil {
		return MoveResult{}, err
	}
	return res, nil
}

// markUnavailable marks a slots row taken by a live ticket.
func markUnavailable(ctx context.Context, tx pgx.Tx, slotID string) error {
	if _, err := tx.Exec(ctx, `UPDATE slots SET available = 'unavailable' WHERE id = $1`, slotID); err != nil {
		return pgErr("marking slot unavailable", err)
	}
	return nil
}
