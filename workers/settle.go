package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// write carries out a decision to create or cancel: it looks up the
// tenant and writes the event into its database; while the database
// refuses it as a double booking whose holder was released earlier on the
// same key, it applies that release and writes again
// (allocConflictRounds at most). It returns what the outcome means:
// settleLookup, settleOutcome.
func (a *Allocator) write(ctx context.Context, log *slog.Logger, sh *allocShard, d delivery, dec decision) decision {
	ten, err := a.reg.Get(ctx, dec.tenant)
	if err != nil {
		return settleLookup(d, dec, err, a.backoff)
	}
	if a.beforeCommit != nil {
		a.beforeCommit(dec.ticket)
	}
	err = a.apply(ctx, ten, dec.ev)
	for round := 0; round < allocConflictRounds; round++ {
		conflict, ok := errors.AsType[*tenants.SlotConflictError](err)
		if !ok {
			break
		}
		resolved, rerr := a.resolveConflict(ctx, log, sh, ten, dec, conflict.Ticket)
		if rerr != nil {
			err = rerr
			break
		}
		if !resolved {
			break
		}
		err = a.apply(ctx, ten, dec.ev)
	}
	tries := 0
	if _, ok := errors.AsType[*tenants.SlotConflictError](err); ok {
		tries = a.countConflict(conflictKey{shard: d.shard, seq: d.seq})
	}
	return settleOutcome(d, dec, err, tries, a.backoff)
}

// apply writes a ticket event, with a deadline of its own.
func (a *Allocator) apply(ctx context.Context, ten tenants.Tenant, ev subjects.TicketEvent) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	defer cancel()
	if ev.Event == subjects.TicketCancelled {
		return a.tickets.ApplyCancelled(dctx, ten, ev)
	}
	return a.tickets.ApplyCreated(dctx, ten, ev)
}

// resolveConflict looks for the release of holder, the live ticket that
// holds the minute of dec, among the older records of dec's key: the
// responders write a ticket into a minute only once its newest record
// frees it, so a holder released there has its released record behind
// dec's, reached by walking back through Prev (at most
// subjects.SlotHistory records; a revision aged out or past the key's
// history ends the walk). If found, its cancel is applied now (its own
// delivery applies it again later, harmlessly) and true is returned: the
// write can be retried.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, sh *allocShard, ten tenants.Tenant,
	dec decision, holder string) (bool, error) {
	rev := dec.prev
	for step := 0; rev != 0 && step < subjects.SlotHistory; step++ {
		gctx, cancel := withNATSDeadline(ctx)
		e, err := sh.kv.GetRevision(gctx, dec.key, rev)
		cancel()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading revision %d of slot %s: %w: %w", rev, dec.key, tenants.ErrUnavailable, err)
		}
		rec, err := subjects.DecodeSlotRecord(dec.key, e.Value(), subjects.CheckWritable)
		if err != nil {
			// Its own delivery dead-letters it; its Prev is not to be
			// trusted.
			return false, nil
		}
		if rec.Ticket == holder && rec.HasTicket() {
			if rec.State != subjects.SlotReleased {
				return false, nil // the holder's own reservation, never released here
			}
			if err := a.apply(ctx, ten, rec.Event()); err != nil {
				if errors.Is(err, tenants.ErrUnavailable) {
					return false, err
				}
				// The release's own delivery reports what is wrong with
				// it; this create stays a plain conflict.
				log.Warn("the holder's release could not be applied", slog.String("holder", holder),
					slog.Uint64("holder_revision", rev), slog.Any("err", err))
				return false, nil
			}
			log.Info("applied the holder's release before the ticket that retakes its slot",
				slog.String("holder", holder), slog.Uint64("holder_revision", rev))
			return true, nil
		}
		if rec.Prev >= rev {
			return false, nil // a history that does not go back
		}
		rev = rec.Prev
	}
	return false, nil
}

// settle carries out a decision to ack, redeliver or dead-letter msg.
func (a *Allocator) settle(ctx context.Context, log *slog.Logger, msg jetstream.Msg, d delivery, dec decision) {
	switch dec.action {
	case actAck:
		if a.afterCommit != nil && dec.ev.Event != "" {
			a.afterCommit(dec.ticket)
		}
		if dec.forget {
			a.forgetConflict(conflictKey{shard: d.shard, seq: d.seq})
		}
		actx, cancel := withNATSDeadline(ctx)
		defer cancel()
		if err := msg.DoubleAck(actx); err != nil {
			// Written; the redelivery will find it there.
			log.Warn("slot record handled but its ack failed", slog.String("record", dec.record), slog.Any("err", err))
		}
		a.m.processed(dec.record)
		log.Debug("slot record handled", slog.String("record", dec.record))
	case actRedeliver:
		a.redeliver(log, msg, dec)
	case actDeadLetter:
		if dec.forget {
			a.forgetConflict(conflictKey{shard: d.shard, seq: d.seq})
		}
		if dec.holder != "" {
			log = log.With(slog.String("holder", dec.holder))
		}
		a.deadLetter(ctx, log, msg, d, dec)
	}
}

// redeliver gives msg back, to come again after dec.delay.
func (a *Allocator) redeliver(log *slog.Logger, msg jetstream.Msg, dec decision) {
	a.m.failed(dec.kind)
	if dec.kind == retryConflict {
		log.Warn("slot held by another live ticket; retrying, its release may be on its way",
			slog.String("holder", dec.holder), slog.Int("try", dec.tries), slog.Duration("delay", dec.delay))
	} else {
		log.Warn("slot record not written; redelivering later", slog.String("reason", dec.kind),
			slog.Duration("delay", dec.delay), slog.Any("err", dec.err))
	}
	if err := msg.NakWithDelay(dec.delay); err != nil {
		log.Warn("nak failed; the message comes back after the ack wait", slog.Any("err", err))
	}
}

// countConflict counts one more double booking of the message k and
// returns the count.
func (a *Allocator) countConflict(k conflictKey) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if len(a.conflicts) > 4096 {
		// Entries of messages another process finished stay behind.
		for k, c := range a.conflicts {
			if now.Sub(c.last) > time.Hour {
				delete(a.conflicts, k)
			}
		}
	}
	c := a.conflicts[k]
	c.n++
	c.last = now
	a.conflicts[k] = c
	return c.n
}

// forgetConflict drops the count of the message k.
func (a *Allocator) forgetConflict(k conflictKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conflicts, k)
}
