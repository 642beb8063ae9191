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

// apply writes one validated event with a deadline of its own.
func (a *Allocator) apply(ctx context.Context, ten tenants.Tenant, ev subjects.TicketEvent) error {
	dctx, cancel := context.WithTimeout(ctx, allocDBTimeout)
	defer cancel()
	if ev.Event == subjects.TicketCancelled {
		return a.tickets.ApplyCancelled(dctx, ten, ev)
	}
	return a.tickets.ApplyCreated(dctx, ten, ev)
}

// resolveConflict looks at the latest event of the ticket that holds the
// minute. If it is a cancel, the cancel is applied now (the stream will
// bring it again later; applying it twice is harmless) and true is
// returned: the write can be retried.
func (a *Allocator) resolveConflict(ctx context.Context, log *slog.Logger, ten tenants.Tenant, holder string) (bool, error) {
	if subjects.ValidID(holder) != nil {
		return false, nil
	}
	gctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	raw, err := a.stream.GetLastMsgForSubject(gctx, subjects.TicketSubject(ten.ID, holder))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the latest event of ticket %s: %w: %w", holder, tenants.ErrUnavailable, err)
	}
	ev, err := decodeTicketEvent(raw.Data, ten.ID, holder)
	if err != nil || ev.Event != subjects.TicketCancelled {
		// A bad cancel is dead-lettered when its own turn comes.
		return false, nil
	}
	if ev.CancelledAt == nil {
		at := raw.Time.UTC()
		ev.CancelledAt = &at
	}
	if err := a.apply(ctx, ten, ev); err != nil {
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

func (a *Allocator) retry(log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string, err error) {
	a.m.failed(reason)
	delay := a.backoff(int(md.NumDelivered))
	log.Warn("ticket event not written; redelivering later", slog.String("reason", reason),
		slog.Duration("delay", delay), slog.Any("err", err))
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		log.Warn("nak failed; the message comes back after the ack wait", slog.Any("err", nerr))
	}
}

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

func (a *Allocator) forgetConflict(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conflicts, seq)
}
