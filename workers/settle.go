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
// refuses it as a double booking that a release in the key's history
// ends (resolveConflict), it applies that release and writes again
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
		resolved, rerr := a.resolveConflict(ctx, log, sh, ten, d, dec, conflict.Ticket)
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

// resolveConflict looks in the history of dec's key for a release that
// ends the double booking the tenant database refused, and applies it
// (its own delivery applies it again later, harmlessly); true means the
// write can be retried.
//   - The holder's release: the responders write a ticket into a minute
//     only once its newest record frees it, so a holder released there
//     has its released record behind dec's, reached by walking back from
//     dec's Prev.
//   - dec's own release, when its create comes after the minute was
//     released and taken again (a redelivery, or a create handled after
//     the records that followed it): found by walking back from the
//     key's newest record to dec's. Applied, it leaves the create nothing
//     to do.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, sh *allocShard, ten tenants.Tenant,
	d delivery, dec decision, holder string) (bool, error) {
	rec, rev, err := a.releaseOf(ctx, sh, dec.key, dec.prev, 0, holder)
	if err != nil || rev == 0 {
		if err != nil || dec.action != actCreate {
			return false, err
		}
		gctx, cancel := withNATSDeadline(ctx)
		newest, gerr := sh.kv.Get(gctx, dec.key)
		cancel()
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			return false, nil
		case gerr != nil:
			return false, fmt.Errorf("reading slot %s: %w: %w", dec.key, tenants.ErrUnavailable, gerr)
		case newest.Revision() <= d.seq:
			return false, nil
		}
		if rec, rev, err = a.releaseOf(ctx, sh, dec.key, newest.Revision(), d.seq, dec.ticket); err != nil || rev == 0 {
			return false, err
		}
	}
	if err := a.apply(ctx, ten, rec.Event()); err != nil {
		if errors.Is(err, tenants.ErrUnavailable) {
			return false, err
		}
		// The release's own delivery reports what is wrong with it; this
		// create stays a plain conflict.
		log.Warn("a release that would end the double booking could not be applied", slog.String("holder", holder),
			slog.String("released", rec.Ticket), slog.Uint64("released_revision", rev), slog.Any("err", err))
		return false, nil
	}
	log.Info("applied a release from the slot's history before writing again", slog.String("holder", holder),
		slog.String("released", rec.Ticket), slog.Uint64("released_revision", rev))
	return true, nil
}

// releaseOf walks key's history back from revision from, while the
// revision is above floor (at most subjects.SlotHistory records), to the
// newest record of ticket, and returns it and its revision if it is that
// ticket's release; rev 0 when it is not (the ticket's reservation, a
// revision aged out or past the key's history, a record that does not
// decode, a history that does not go back).
func (a *Allocator) releaseOf(ctx context.Context, sh *allocShard, key string, from, floor uint64,
	ticket string) (subjects.SlotRecord, uint64, error) {
	for step, r := 0, from; r > floor && step < subjects.SlotHistory; step++ {
		gctx, cancel := withNATSDeadline(ctx)
		e, err := sh.kv.GetRevision(gctx, key, r)
		cancel()
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return subjects.SlotRecord{}, 0, fmt.Errorf("reading revision %d of slot %s: %w: %w", r, key,
				tenants.ErrUnavailable, err)
		}
		rec, err := subjects.DecodeSlotRecord(key, e.Value(), subjects.CheckWritable)
		if err != nil {
			break // its own delivery dead-letters it; its Prev is not to be trusted
		}
		if rec.HasTicket() && rec.Ticket == ticket {
			if rec.State == subjects.SlotReleased {
				return rec, r, nil
			}
			break // the ticket's reservation: not released since
		}
		if rec.Prev >= r {
			break // a history that does not go back
		}
		r = rec.Prev
	}
	return subjects.SlotRecord{}, 0, nil
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
