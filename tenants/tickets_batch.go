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

// MaxCreatedBatch is the most events ApplyCreatedBatch writes with one
// set of statements; a longer batch is written in parts of this size.
const MaxCreatedBatch = 500

// Statements of the batched create. They run in one pipelined round trip
// as one implicit transaction (pgx's SendBatch): the slots rows made and
// locked in id order (two batches that share minutes lock them in the same
// order, so they wait for each other instead of deadlocking), then every
// ticket whose minute no other live ticket holds inserted, and its slot
// marked unavailable. A ticket already present (a repeat, or a cancel that
// came first) is left as it is, as ApplyCreated leaves it.
const (
	batchSlotsSQL = `INSERT INTO slots (id, sa_id, time, available)
		SELECT n.id, n.sa_id, n.time, 'available' FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS n(id, sa_id, time)
		ON CONFLICT DO NOTHING`
	batchLockSQL    = `SELECT id FROM slots WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`
	batchTicketsSQL = `WITH n AS (
			SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],
				$8::text[], $9::text[])
				AS n(id, type, created_at, deadline, start_time, sa_id, slot_id, subject, description)
		), ins AS (
			INSERT INTO tickets (id, type, status, created_at, deadline, start_time, end_time, sa_id, slot_id, subject, description)
			SELECT id, type, 'allocated', created_at, deadline, start_time, start_time + interval '1 minute', sa_id, slot_id,
				NULLIF(subject, ''), NULLIF(description, '') FROM n
			WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.sa_id = n.sa_id AND t.start_time = n.start_time AND t.status <> 'cancelled')
			ON CONFLICT (id) DO NOTHING
			RETURNING id, slot_id
		), upd AS (
			UPDATE slots SET available = 'unavailable' WHERE id IN (SELECT slot_id FROM ins)
		)
		SELECT id FROM ins`
)

// ApplyCreatedBatch writes accepted tickets of t as allocated, as
// ApplyCreated does one by one, but in one transaction and one round trip
// for the whole batch: what the allocators use, so that a tenant's
// tickets cost one commit per batch instead of one each.
//
// It returns one result per event, in order: nil (written, or already
// there), a *SlotConflictError (another live ticket holds the minute;
// nothing written for that event) or ErrInvalidTicket (an event no write
// may accept, or an agent the database does not have). err is for the
// batch as a whole: the database could not be reached or failed (wrapping
// ErrUnavailable where the cause is connectivity), and then nothing was
// written. Events that the one statement cannot take together (two for
// the same agent-minute, or a batch refused as a whole) are written one by
// one with ApplyCreated, in order, after it.
func (s *Tickets) ApplyCreatedBatch(ctx context.Context, t Tenant, evs []subjects.TicketEvent) ([]error, error) {
	results := make([]error, len(evs))
	for start := 0; start < len(evs); start += MaxCreatedBatch {
		end := min(start+MaxCreatedBatch, len(evs))
		if err := s.applyCreatedPart(ctx, t, evs[start:end], results[start:end]); err != nil {
			return nil, err
		}
	}
	return results, nil
}

func (s *Tickets) applyCreatedPart(ctx context.Context, t Tenant, evs []subjects.TicketEvent, results []error) error {
	// The fast path takes each agent-minute and each ticket id once; the
	// rest wait for the one-by-one path.
	type minute struct {
		agent string
		at    int64
	}
	fast := make([]int, 0, len(evs))
	var slow []int
	minutes := make(map[minute]bool, len(evs))
	ids := make(map[string]bool, len(evs))
	for i, ev := range evs {
		if err := checkEvent(ev); err != nil {
			results[i] = err
			continue
		}
		m := minute{ev.Agent, ev.SlotTime.Unix()}
		if minutes[m] || ids[ev.Ticket] {
			slow = append(slow, i)
			continue
		}
		minutes[m], ids[ev.Ticket] = true, true
		fast = append(fast, i)
	}
	if len(fast) > 0 {
		inserted, err := s.insertCreated(ctx, t, evs, fast)
		switch {
		case errors.Is(err, ErrUnavailable):
			return fmt.Errorf("apply %d created tickets of tenant %s: %w", len(fast), t.ID, err)
		case err != nil:
			// Refused as a whole (an agent the database lacks, most
			// likely): one by one finds out which.
			s.log.Debug("batched create refused, writing one by one", slog.String("tenant", t.ID), slog.Any("err", err))
			slow = append(fast, slow...)
		default:
			if err := s.settleMissing(ctx, t, evs, fast, inserted, results, &slow); err != nil {
				return err
			}
		}
	}
	slices.Sort(slow)
	for _, i := range slow {
		err := s.ApplyCreated(ctx, t, evs[i])
		if errors.Is(err, ErrUnavailable) {
			return err
		}
		results[i] = err
	}
	return nil
}

// insertCreated runs the batched statements for evs[idx...] and returns
// the ids it inserted.
func (s *Tickets) insertCreated(ctx context.Context, t Tenant, evs []subjects.TicketEvent, idx []int) (map[string]bool, error) {
	n := len(idx)
	slotIDs, agents, tickets, types := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	starts, created, deadlines := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	subjs, descs := make([]string, n), make([]string, n)
	for j, i := range idx {
		ev := evs[i]
		slotIDs[j], agents[j], tickets[j], types[j] = slotRowID(ev.Agent, ev.SlotTime), ev.Agent, ev.Ticket, ev.Type
		subjs[j], descs[j] = ev.Subject, ev.Description
		starts[j], created[j], deadlines[j] = ev.SlotTime.UTC(), ev.CreatedAt.UTC(), ev.Deadline.UTC()
	}
	inserted := make(map[string]bool, n)
	err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		b := &pgx.Batch{}
		b.Queue(batchSlotsSQL, slotIDs, agents, starts)
		b.Queue(batchLockSQL, slotIDs)
		b.Queue(batchTicketsSQL, tickets, types, created, deadlines, starts, agents, slotIDs, subjs, descs)
		br := conn.SendBatch(ctx, b)
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			if pgCode(err) == "23503" { // foreign_key_violation: no such agent
				return fmt.Errorf("%w: an agent of the batch is not in the tenant database", ErrInvalidTicket)
			}
			return pgErr("inserting slot rows", err)
		}
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return pgErr("locking slot rows", err)
		}
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return pgErr("inserting tickets", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				_ = br.Close()
				return pgErr("reading inserted tickets", err)
			}
			inserted[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			_ = br.Close()
			return pgErr("inserting tickets", err)
		}
		if err := br.Close(); err != nil {
			return pgErr("committing tickets", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return inserted, nil
}

// settleMissing gives each fast-path event its result: inserted, or
// already present by id (nil), or refused because another live ticket
// holds its minute (*SlotConflictError). A holder that has gone meanwhile
// sends the event to the one-by-one path.
func (s *Tickets) settleMissing(ctx context.Context, t Tenant, evs []subjects.TicketEvent, idx []int,
	inserted map[string]bool, results []error, slow *[]int) error {
	var missing []int
	for _, i := range idx {
		if inserted[evs[i].Ticket] {
			s.log.Debug("ticket allocated", slog.String("tenant", t.ID), slog.String("ticket", evs[i].Ticket),
				slog.String("agent", evs[i].Agent), slog.Time("slot_time", evs[i].SlotTime))
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return nil
	}
	ids := make([]string, len(missing))
	for j, i := range missing {
		ids[j] = evs[i].Ticket
	}
	present := make(map[string]bool, len(missing))
	err := s.pools.Do(ctx, t, func(ctx context.Context, conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id FROM tickets WHERE id = ANY($1::text[])`, ids)
		if err != nil {
			return pgErr("reading tickets", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return pgErr("reading tickets", err)
			}
			present[id] = true
		}
		return pgWrapRows(rows.Err())
	})
	if err != nil {
		return fmt.Errorf("apply created tickets of tenant %s: %w", t.ID, err)
	}
	for _, i := range missing {
		ev := evs[i]
		if present[ev.Ticket] {
			continue // a repeat, or its cancel came first
		}
		holder, err := s.liveHolder(ctx, t, ev.Agent, ev.SlotTime)
		switch {
		case err != nil:
			return fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, err)
		case holder == "":
			*slow = append(*slow, i) // the holder was cancelled meanwhile
		default:
			results[i] = fmt.Errorf("apply created ticket %s of tenant %s: %w", ev.Ticket, t.ID, &SlotConflictError{Ticket: holder})
		}
	}
	return nil
}

// pgWrapRows is pgErr for a rows.Err, nil for nil.
func pgWrapRows(err error) error {
	if err == nil {
		return nil
	}
	return pgErr("reading tickets", err)
}
