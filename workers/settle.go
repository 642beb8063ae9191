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

// write carries out the decisions to create, move or cancel of one batch of a
// tenant's records, in their order, and leaves in each item what its
// outcome means (settleLookup, settleOutcome, unavailableOf):
//   - the tenant down (its database failed a moment ago): nothing tried,
//     the records parked (or, parked already, given back);
//   - consecutive creates written together (ApplyCreatedBatch), a cancel
//     or a move on its own in its place (a moved ticket's record comes
//     before the record that takes its old minute: applied in order, the
//     row has left the minute before another takes it);
//   - a double booking that the key's history ends (resolveConflict):
//     the holder's release or newest record after a move applied, and the
//     write tried again (allocConflictRounds at most);
//   - the database unreachable: the tenant marked down, the rest of the
//     batch not tried.
func (a *Allocator) write(ctx context.Context, tenant string, writes []*allocItem) {
	if left := a.downFor(tenant); left > 0 {
		for _, it := range writes {
			it.dec = unavailableOf(it.d, it.dec, errTenantDown, left)
		}
		return
	}
	ten, err := a.reg.Get(ctx, tenant)
	if err != nil {
		for _, it := range writes {
			it.dec = settleLookup(it.d, it.dec, err, a.backoff)
		}
		return
	}
	results := make([]error, len(writes))
	for i := 0; i < len(writes); {
		j := i + 1
		if writes[i].dec.action == actCreate {
			for j < len(writes) && writes[j].dec.action == actCreate {
				j++
			}
		}
		a.writeRun(ctx, ten, writes[i:j], results[i:j])
		if outage := firstUnavailable(results[i:j]); outage != nil {
			for k := j; k < len(writes); k++ {
				results[k] = outage
			}
			break
		}
		i = j
	}
	down, downFor := false, time.Duration(0)
	for k, it := range writes {
		err := results[k]
		if errors.Is(err, tenants.ErrUnavailable) {
			if !down {
				down, downFor = true, a.markDown(tenant)
				it.log.Warn("tenant database unreachable; parking its records", slog.Duration("down_for", downFor),
					slog.Any("err", err))
			}
			it.dec = unavailableOf(it.d, it.dec, err, downFor)
			continue
		}
		tries := 0
		if _, ok := errors.AsType[*tenants.SlotConflictError](err); ok {
			tries = a.countConflict(conflictKey{shard: it.d.shard, seq: it.d.seq})
		}
		it.dec = settleOutcome(it.d, it.dec, err, tries, a.backoff)
	}
	if !down {
		a.markUp(tenant)
	}
}

// firstUnavailable is the first of errs that says the database is
// unreachable, nil when none does.
func firstUnavailable(errs []error) error {
	for _, err := range errs {
		if errors.Is(err, tenants.ErrUnavailable) {
			return err
		}
	}
	return nil
}

// writeRun writes run, one cancel, one move or consecutive creates, into
// results, then ends the double bookings it can (retryConflict).
func (a *Allocator) writeRun(ctx context.Context, ten tenants.Tenant, run []*allocItem, results []error) {
	if a.beforeCommit != nil {
		for _, it := range run {
			a.beforeCommit(it.dec.ticket)
		}
	}
	if run[0].dec.action != actCreate {
		results[0] = a.applyItem(ctx, ten, run[0])
	} else {
		evs := make([]subjects.TicketEvent, len(run))
		for k, it := range run {
			evs[k] = it.dec.ev
		}
		dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
		errs, err := a.tickets.ApplyCreatedBatch(dctx, ten, evs)
		cancel()
		a.m.dbError(err)
		for _, e := range errs {
			a.m.dbError(e)
		}
		for k := range run {
			if err != nil {
				results[k] = err
			} else {
				results[k] = errs[k]
			}
		}
	}
	for k, it := range run {
		results[k] = a.retryConflict(ctx, ten, it, results[k])
	}
}

// retryConflict is the outcome of it's write, err, after the double
// booking it reports, if any, was ended by a release in the key's history
// (resolveConflict) and the write tried again, as often as that helps.
func (a *Allocator) retryConflict(ctx context.Context, ten tenants.Tenant, it *allocItem, err error) error {
	sh := a.shard(it.d.shard)
	for round := 0; round < allocConflictRounds && sh != nil; round++ {
		conflict, ok := errors.AsType[*tenants.SlotConflictError](err)
		if !ok {
			break
		}
		resolved, rerr := a.resolveConflict(ctx, it.log, sh, ten, it.d, it.dec, conflict.Ticket)
		if rerr != nil {
			return rerr
		}
		if !resolved {
			break
		}
		err = a.applyItem(ctx, ten, it)
	}
	return err
}

// applyItem writes it's decision: its move, or its event.
func (a *Allocator) applyItem(ctx context.Context, ten tenants.Tenant, it *allocItem) error {
	if it.dec.action == actMove {
		return a.applyMove(ctx, it.log, ten, it.dec.ev, it.dec.moves)
	}
	return a.apply(ctx, ten, it.dec.ev)
}

// applyMove moves a ticket's row to ev's slot, the record of its moves-th
// move, and once that committed, if the row did move (or was written),
// publishes the ticket's moved event.
func (a *Allocator) applyMove(ctx context.Context, log *slog.Logger, ten tenants.Tenant, ev subjects.TicketEvent, moves int) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	res, err := a.tickets.ApplyMoved(dctx, ten, ev, moves)
	cancel()
	a.m.dbError(err)
	if err != nil || !res.Applied {
		return err
	}
	a.m.moved()
	a.publishMove(log, subjects.MoveEvent{Event: subjects.EventMoved, Tenant: ten.ID, Ticket: ev.Ticket, Type: ev.Type,
		Agent: ev.Agent, SlotTime: ev.SlotTime.UTC(), FromAgent: res.FromAgent, FromSlotTime: res.FromSlotTime,
		Deadline: ev.Deadline.UTC(), Moves: moves})
	return nil
}

// publishMove publishes a moved event on core NATS. A notification: a
// failure is counted (in the allocator's own counter too, older than the
// events' one) and logged, and the record is acked all the same (the row
// and the slot records are the truth).
func (a *Allocator) publishMove(log *slog.Logger, ev subjects.MoveEvent) {
	if !publishEvent(a.js.Conn(), log, ev.Tenant, subjects.EventMoved, ev.Ticket, ev) {
		a.m.moveEventFailed()
		return
	}
	log.Debug("moved event published", slog.String("moved", ev.Ticket), slog.String("agent", ev.Agent),
		slog.Time("slot_time", ev.SlotTime), slog.Int("moves", ev.Moves))
}

// publishWritten publishes the allocated or cancelled event of a ticket
// record whose write committed (or was found done: a redelivery repeats
// its event, as notifications may). Moves were published by applyMove;
// holds and freed minutes are no ticket's events.
func (a *Allocator) publishWritten(it *allocItem) {
	ev := it.dec.ev
	switch it.dec.record {
	case recordCreated:
		publishEvent(a.js.Conn(), it.log, ev.Tenant, subjects.EventAllocated, ev.Ticket, allocatedEvent(ev))
	case recordCancelled:
		publishEvent(a.js.Conn(), it.log, ev.Tenant, subjects.EventCancelled, ev.Ticket, cancelledEvent(ev))
	}
}

// apply writes a ticket event, with a deadline of its own.
func (a *Allocator) apply(ctx context.Context, ten tenants.Tenant, ev subjects.TicketEvent) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	defer cancel()
	var err error
	if ev.Event == subjects.TicketCancelled {
		err = a.tickets.ApplyCancelled(dctx, ten, ev)
	} else {
		err = a.tickets.ApplyCreated(dctx, ten, ev)
	}
	a.m.dbError(err)
	return err
}

// resolveConflict looks in the slot records for what ends the double
// booking the tenant database refused, and applies it (its own delivery
// applies it again later, harmlessly); true means the write can be
// retried.
//   - The holder left the minute: the responders write a ticket into a
//     minute only once its newest record frees it, so a holder released
//     there has its released record behind dec's, reached by walking back
//     from dec's Prev; a holder moved away is named by the Moved of dec's
//     record or of one behind it, and its newest record (at the key Moved
//     names, followed on through later moves: tenants.TicketRecord) is
//     applied: its move, or its release.
//   - dec's own ticket left the minute after dec's record, when dec comes
//     after the minute was released (or vacated by a move) and taken
//     again (a redelivery, or a record handled after the records that
//     followed it): found by walking back from the key's newest record to
//     dec's. Applied, it leaves dec nothing to do.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, sh *allocShard, ten tenants.Tenant,
	d delivery, dec decision, holder string) (bool, error) {
	rec, rev, err := a.leftBy(ctx, sh, dec.key, dec.moved, dec.prev, 0, holder)
	if err != nil || rev == 0 {
		if err != nil || (dec.action != actCreate && dec.action != actMove) {
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
		if rec, rev, err = a.leftBy(ctx, sh, dec.key, nil, newest.Revision(), d.seq, dec.ticket); err != nil || rev == 0 {
			return false, err
		}
	}
	if rec.State == subjects.SlotConfirmed {
		err = a.applyMove(ctx, log, ten, rec.Event(), rec.Moves)
	} else {
		err = a.apply(ctx, ten, rec.Event())
	}
	if err != nil {
		if errors.Is(err, tenants.ErrUnavailable) {
			return false, err
		}
		// The record's own delivery reports what is wrong with it; this
		// write stays a plain conflict.
		log.Warn("a record that would end the double booking could not be applied", slog.String("holder", holder),
			slog.String("applied", rec.Ticket), slog.String("applied_state", rec.State), slog.Uint64("applied_revision", rev),
			slog.Any("err", err))
		return false, nil
	}
	log.Info("applied a record from the slot's history before writing again", slog.String("holder", holder),
		slog.String("applied", rec.Ticket), slog.String("applied_state", rec.State), slog.Int("applied_moves", rec.Moves),
		slog.Uint64("applied_revision", rev))
	return true, nil
}

// leftBy walks key's history back from revision from, while the revision
// is above floor (at most subjects.SlotHistory records), for the record
// saying that ticket left the minute, and returns the record that ends
// its hold on the minute, with its revision: its release on key, or, when
// own (the Moved of the record being written) or a record on the way
// says it moved, its newest record wherever it went (a move, or a release
// there). rev 0 when there is none (the ticket's reservation still on key,
// a revision aged out or past the key's history, a record that does not
// decode, a history that does not go back, a moved ticket whose newest
// record is not found or not a move).
func (a *Allocator) leftBy(ctx context.Context, sh *allocShard, key string, own *subjects.SlotMove, from, floor uint64,
	ticket string) (subjects.SlotRecord, uint64, error) {
	if own != nil && own.Ticket == ticket {
		return a.movedTo(ctx, sh, key, *own, ticket)
	}
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
		if rec.Moved != nil && rec.Moved.Ticket == ticket {
			return a.movedTo(ctx, sh, key, *rec.Moved, ticket)
		}
		if rec.Prev >= r {
			break // a history that does not go back
		}
		r = rec.Prev
	}
	return subjects.SlotRecord{}, 0, nil
}

// movedTo is the newest record of ticket, which moved from key as m
// says: its move, or its release, with its revision; rev 0 for anything
// else.
func (a *Allocator) movedTo(ctx context.Context, sh *allocShard, key string, m subjects.SlotMove,
	ticket string) (subjects.SlotRecord, uint64, error) {
	tenant, _, _, err := subjects.ParseSlotKey(key)
	if err != nil {
		return subjects.SlotRecord{}, 0, nil
	}
	at, err := tenants.TicketRecord(ctx, sh.kv, subjects.SlotKey(tenant, m.Agent, m.SlotTime), ticket,
		subjects.CheckWritable, natsTimeout)
	switch {
	case errors.Is(err, tenants.ErrUnavailable):
		return subjects.SlotRecord{}, 0, err
	case err != nil || !at.Found:
		return subjects.SlotRecord{}, 0, nil // a record its own delivery dead-letters, or aged out
	}
	rec := at.Record
	if rec.State == subjects.SlotConfirmed && rec.Moves == 0 {
		return subjects.SlotRecord{}, 0, nil
	}
	return rec, at.Revision, nil
}

// settle carries out the decisions of a batch: the records written or
// with nothing to write acked together (ackAll), those whose tenant is
// down parked, the others given back or dead-lettered one by one.
func (a *Allocator) settle(ctx context.Context, batch []*allocItem) {
	// The batch's writes have committed (or failed): the end of the
	// allocation latency, before the acks' round trip.
	committed := time.Now()
	var acks, parks []*allocItem
	for _, it := range batch {
		dec := it.dec
		switch dec.action {
		case actAck:
			if a.afterCommit != nil && dec.ev.Event != "" {
				a.afterCommit(dec.ticket)
			}
			if dec.forget {
				a.forgetConflict(conflictKey{shard: it.d.shard, seq: it.d.seq})
			}
			acks = append(acks, it)
		case actPark:
			parks = append(parks, it)
		case actRedeliver:
			a.redeliver(it.log, it.msg, dec)
		case actDeadLetter:
			if dec.forget {
				a.forgetConflict(conflictKey{shard: it.d.shard, seq: it.d.seq})
			}
			log := it.log
			if dec.holder != "" {
				log = log.With(slog.String("holder", dec.holder))
			}
			a.deadLetter(ctx, log, it.msg, it.d, dec)
		default:
			// Every decision that writes was given its outcome.
			a.redeliver(it.log, it.msg, redeliverOf(it.d, dec, retryError,
				fmt.Errorf("no outcome for action %s", dec.action), a.backoff))
		}
	}
	parked := a.park(ctx, parks)
	a.ackAll(ctx, append(acks, parked...))
	a.settled.add(len(acks) + len(parked))
	for _, it := range acks {
		a.m.processed(it.dec.record)
		if it.dec.ev.Event != "" {
			a.m.allocated(it.dec.record, committed.Sub(it.stamp))
			a.publishWritten(it)
		}
		it.log.Debug("slot record handled", slog.String("record", it.dec.record))
	}
	for _, it := range batch {
		a.m.observe(it.record, time.Since(it.start))
		it.done()
	}
}

// ackAll acks the messages of items. The acks are sent without waiting
// for each one's confirmation (Ack, not DoubleAck), followed by one flush,
// whose PONG says the server has read them all: one round trip for the
// batch instead of one per message. A lost ack costs a redelivery and
// nothing else: the slot streams keep their records whatever the
// consumer's state (limits retention), every write is idempotent (the
// ticket id is the key, a cancel is final), and a parked copy left
// behind by a lost ack of the parked stream is written again, harmlessly.
func (a *Allocator) ackAll(ctx context.Context, items []*allocItem) {
	if len(items) == 0 {
		return
	}
	failed := 0
	for _, it := range items {
		if err := it.msg.Ack(); err != nil {
			failed++
			it.log.Warn("slot record handled but its ack failed", slog.String("record", it.dec.record), slog.Any("err", err))
		}
	}
	if failed == len(items) {
		return
	}
	fctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	if err := a.js.Conn().FlushWithContext(fctx); err != nil {
		// Written; a redelivery finds them there.
		a.log.Warn("acks of a batch not confirmed", slog.Int("records", len(items)), slog.Any("err", err))
	}
}

// redeliver gives msg back, to come again after dec.delay.
func (a *Allocator) redeliver(log *slog.Logger, msg jetstream.Msg, dec decision) {
	a.m.failed(dec.kind)
	switch dec.kind {
	case retryConflict:
		log.Warn("slot held by another live ticket; retrying, its release may be on its way",
			slog.String("holder", dec.holder), slog.Int("try", dec.tries), slog.Duration("delay", dec.delay))
	case retryUnavailable:
		log.Debug("parked record not written, its tenant is down; later", slog.Duration("delay", dec.delay),
			slog.Any("err", dec.err))
	default:
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
