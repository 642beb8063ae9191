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
// refuses it as a double booking whose holder has a cancel waiting in the
// stream, it applies that cancel and writes again (allocConflictRounds at
// most). It returns what the outcome means: settleLookup, settleOutcome.
func (a *Allocator) write(ctx context.Context, log *slog.Logger, d delivery, dec decision) decision {
	ten, err := a.reg.Get(ctx, dec.tenant)
	if err != nil {
		return settleLookup(d, dec, err, a.backoff)
	}
	if a.beforeCommit != nil {
		a.beforeCommit(dec.ticket)
	}
	err = a.apply(ctx, ten, dec)
	for round := 0; round < allocConflictRounds; round++ {
		conflict, ok := errors.AsType[*tenants.SlotConflictError](err)
		if !ok {
			break
		}
		resolved, rerr := a.resolveConflict(ctx, log, ten, conflict.Ticket)
		if rerr != nil {
			err = rerr
			break
		}
		if !resolved {
			break
		}
		err = a.apply(ctx, ten, dec)
	}
	tries := 0
	if _, ok := errors.AsType[*tenants.SlotConflictError](err); ok {
		tries = a.countConflict(d.seq)
	}
	return settleOutcome(d, dec, err, tries, a.backoff)
}

// apply writes the event of a decision to create or cancel, with a
// deadline of its own.
func (a *Allocator) apply(ctx context.Context, ten tenants.Tenant, dec decision) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	defer cancel()
	if dec.action == actCancel {
		return a.tickets.ApplyCancelled(dctx, ten, dec.ev)
	}
	return a.tickets.ApplyCreated(dctx, ten, dec.ev)
}

// resolveConflict looks at the latest event of the ticket that holds the
// minute. If it is a cancel, the cancel is applied now (the stream will
// bring it again later; applying it twice is harmless) and true is
// returned: the write can be retried.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, ten tenants.Tenant, holder string) (bool, error) {
	if subjects.ValidID(holder) != nil {
		return false, nil
	}
	subject := subjects.TicketSubject(ten.ID, holder)
	gctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	raw, err := a.stream.GetLastMsgForSubject(gctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the latest event of ticket %s: %w: %w", holder, tenants.ErrUnavailable, err)
	}
	dec := decide(delivery{subject: subject, data: raw.Data, seq: raw.Sequence, stored: raw.Time})
	if dec.action != actCancel {
		// A bad cancel is dead-lettered when its own turn comes.
		return false, nil
	}
	if err := a.apply(ctx, ten, dec); err != nil {
		if errors.Is(err, tenants.ErrUnavailable) {
			return false, err
		}
		// The cancel's own delivery reports what is wrong with it; this
		// create stays a plain conflict.
		log.Warn("the holder's pending cancel could not be applied", slog.String("holder", holder), slog.Any("err", err))
		return false, nil
	}
	log.Info("applied the holder's pending cancel before the create that retakes its slot",
		slog.String("holder", holder))
	return true, nil
}

// settle carries out a decision to ack, redeliver or dead-letter msg.
func (a *Allocator) settle(ctx context.Context, log *slog.Logger, msg jetstream.Msg, d delivery, dec decision) {
	switch dec.action {
	case actAck:
		if a.afterCommit != nil {
			a.afterCommit(dec.ticket)
		}
		if dec.forget {
			a.forgetConflict(d.seq)
		}
		actx, cancel := withNATSDeadline(ctx)
		defer cancel()
		if err := msg.DoubleAck(actx); err != nil {
			// Written; the redelivery will find it there.
			log.Warn("ticket written but its ack failed", slog.Any("err", err))
		}
		a.m.processed(dec.ev.Event)
		log.Debug("ticket event written", slog.String("event", dec.ev.Event))
	case actRedeliver:
		a.redeliver(log, msg, dec)
	case actDeadLetter:
		if dec.forget {
			a.forgetConflict(d.seq)
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
		log.Warn("slot held by another live ticket; retrying, its cancel may be on its way",
			slog.String("holder", dec.holder), slog.Int("try", dec.tries), slog.Duration("delay", dec.delay))
	} else {
		log.Warn("ticket event not written; redelivering later", slog.String("reason", dec.kind),
			slog.Duration("delay", dec.delay), slog.Any("err", dec.err))
	}
	if err := msg.NakWithDelay(dec.delay); err != nil {
		log.Warn("nak failed; the message comes back after the ack wait", slog.Any("err", err))
	}
}

// countConflict counts one more double booking of the message at stream
// sequence seq and returns the count.
func (a *Allocator) countConflict(seq uint64) int {
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
	c := a.conflicts[seq]
	c.n++
	c.last = now
	a.conflicts[seq] = c
	return c.n
}

// forgetConflict drops the count of the message at stream sequence seq.
func (a *Allocator) forgetConflict(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conflicts, seq)
}
