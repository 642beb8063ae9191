package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
)

// Accepted is a ticket admitted by Create (create_ticket's 201).
type Accepted struct {
	TicketID, Type, Agent         string
	SlotTime, Deadline, CreatedAt time.Time
}

// Ticket is a ticket as Get reports it; Status is subjects.StatusAccepted
// (admitted, not yet written by a worker), StatusAllocated or
// StatusCancelled.
type Ticket struct {
	TicketID, Type, Status, Agent string
	SlotTime, Deadline, CreatedAt time.Time
}

// Hold is a pending hold made by ValidateETA.
type Hold struct {
	SlotID              string
	SlotTime, ExpiresAt time.Time
}

// Cancelled is a ticket Cancel cancelled.
type Cancelled struct{ TicketID string }

// Allocated is the ticket AllocateSlot made of a hold.
type Allocated struct{ TicketID string }

// ticketType checks a ticket_type and returns its SLA.
func ticketType(typ string) (time.Duration, error) {
	sla, ok := subjects.SLA(typ)
	if !ok {
		return 0, invalidField("ticket_type", "must be %q, %q or %q (case-sensitive)",
			subjects.Gold, subjects.Silver, subjects.Bronze)
	}
	return sla, nil
}

// agentsRev is the revision of tenant's last agent write that this
// process knows of, for the ETA requests that read the tenant's agents
// (reserve and hold): the responder answers them only from a calendar
// that has applied it, so a tenant's next request sees the agent it just
// registered or made unavailable.
func (s *Service) agentsRev(tenant string) uint64 {
	if s.agents == nil {
		return 0
	}
	return s.agents.Revision(tenant)
}

// Create admits a new ticket of type typ for t (create_ticket). idemKey,
// when not nil, is the request's Idempotency-Key, already checked by the
// transport: the same key with the same type gives the same ticket.
func (s *Service) Create(ctx context.Context, t tenants.Tenant, typ string, idemKey *string) (Accepted, error) {
	if _, err := ticketType(typ); err != nil {
		return Accepted{}, err
	}
	release, err := s.enterNew(ctx, t.ID)
	if err != nil {
		return Accepted{}, err
	}
	defer release()
	if idemKey != nil {
		return s.createIdempotent(ctx, t, typ, *idemKey)
	}
	return s.admit(ctx, t, typ, subjects.NewTicketID())
}

// admit reserves a slot for ticket, publishes it and returns it. A
// rejection or an outage leaves nothing behind.
func (s *Service) admit(ctx context.Context, t tenants.Tenant, typ, ticket string) (Accepted, error) {
	sla, err := ticketType(typ)
	if err != nil {
		return Accepted{}, err
	}
	createdAt := subjects.Stamp(s.now())
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAReserve, Tenant: t.ID, Type: typ, CreatedAt: createdAt, Ticket: ticket,
		AgentsRev: s.agentsRev(t.ID),
	})
	if err != nil {
		return Accepted{}, err
	}
	if err := reply.Err(); errors.Is(err, subjects.ErrETANoSlot) {
		return Accepted{}, &NoSlotError{Op: subjects.OpCreateTicket, Type: typ, SLA: sla}
	} else if err != nil {
		return Accepted{}, replyError(subjects.ETAReserve, err)
	}
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: ticket, Type: typ, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	ev, err = s.publishCreated(ctx, t, ev)
	if err != nil {
		return Accepted{}, err
	}
	return acceptedOf(ev), nil
}

func acceptedOf(ev subjects.TicketEvent) Accepted {
	return Accepted{TicketID: ev.Ticket, Type: ev.Type, Agent: ev.Agent,
		SlotTime: ev.SlotTime, Deadline: ev.Deadline, CreatedAt: ev.CreatedAt}
}

// publishCreated publishes a confirmed reservation as a ticket. If the
// publish fails, the reservation is released and the caller gets
// ErrUnavailable: a client is never told a ticket was admitted that is not
// in the stream. A publish whose acknowledgement was lost may still have
// been stored, so the stream (and the tenant database, if a worker was
// quick) is asked first; only a ticket found in neither is released.
//
// It returns the event the stream holds for the ticket: ev, unless the
// ticket id was published before with another slot (an Idempotency-Key
// takeover reuses the id of a twin presumed dead; should the twin's
// publish have landed after all, the stream deduplicates ours): then that
// earlier event is the ticket, and ev's reservation is released.
func (s *Service) publishCreated(ctx context.Context, t tenants.Tenant, ev subjects.TicketEvent) (subjects.TicketEvent, error) {
	if s.beforePublish != nil {
		s.beforePublish(ev.Ticket)
	}
	ack, err := s.publishAck(ctx, ev, ev.Ticket)
	if err == nil && !ack.Duplicate {
		return ev, nil
	}
	log := s.logger.With(slog.String("tenant", ev.Tenant), slog.String("ticket", ev.Ticket))
	if err == nil {
		return s.publishedBefore(ctx, t, ev, log)
	}
	if got, found, lerr := s.latest(ctx, t, ev.Ticket); lerr == nil && found && got.Event == subjects.TicketCreated {
		log.Warn("ticket publish reported an error but the ticket is stored", slog.Any("err", err))
		return got, nil
	} else if lerr != nil {
		// Unknown whether the create landed: a cancel makes sure that, if
		// it did, the ticket ends cancelled rather than holding a slot
		// that is about to be released. Workers apply a cancel whichever
		// event arrives first.
		cancelled := ev
		cancelled.Event = subjects.TicketCancelled
		at := subjects.Stamp(s.now())
		cancelled.CancelledAt = &at
		if cerr := s.publish(ctx, cancelled, ev.Ticket+":cancel"); cerr != nil {
			log.Error("ticket publish failed and its fate is unknown; cancel not published either",
				slog.Any("err", err), slog.Any("lookup_err", lerr), slog.Any("cancel_err", cerr))
		}
	}
	if rerr := s.release(ctx, ev); rerr != nil {
		log.Error("ticket publish failed and releasing its slot failed too; the slot stays reserved until its key expires",
			slog.Any("err", err), slog.Any("release_err", rerr))
	}
	return subjects.TicketEvent{}, unavailable(fmt.Errorf("publishing ticket %s: %w", ev.Ticket, err))
}

// publishedBefore handles a create the stream deduplicated: the ticket id
// already has an event. If it names ev's slot it is ev; otherwise it is
// the ticket, and ev's reservation is released.
func (s *Service) publishedBefore(ctx context.Context, t tenants.Tenant, ev subjects.TicketEvent, log *slog.Logger) (subjects.TicketEvent, error) {
	got, found, err := s.latest(ctx, t, ev.Ticket)
	if err == nil && found && got.Agent == ev.Agent && got.SlotTime.Equal(ev.SlotTime) {
		return got, nil
	}
	if rerr := s.release(ctx, ev); rerr != nil {
		log.Error("releasing the slot of a ticket published before with another slot failed; the reconciler releases it",
			slog.Any("err", rerr))
	}
	if err == nil && !found {
		err = errors.New("no event in the stream or row in the tenant database")
	}
	if err != nil {
		return subjects.TicketEvent{}, unavailable(fmt.Errorf("ticket %s was published before and cannot be read back: %w",
			ev.Ticket, err))
	}
	log.Warn("ticket id was published before with another slot; answering that ticket",
		slog.String("agent", got.Agent), slog.Time("slot_time", got.SlotTime))
	return got, nil
}

// publish sends one ticket event to the TICKETS stream, deduplicated by
// msgID within the stream's duplicate window.
func (s *Service) publish(ctx context.Context, ev subjects.TicketEvent, msgID string) error {
	_, err := s.publishAck(ctx, ev, msgID)
	return err
}

// publishAck is publish, with the stream's acknowledgement (Duplicate
// says the message id was already there).
func (s *Service) publishAck(ctx context.Context, ev subjects.TicketEvent, msgID string) (*jetstream.PubAck, error) {
	if _, err := s.ticketStream(ctx); err != nil {
		return nil, err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encoding ticket event: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.budget.Publish)
	defer cancel()
	ack, err := s.js.Publish(pctx, subjects.TicketSubject(ev.Tenant, ev.Ticket), data,
		jetstream.WithMsgID(msgID), jetstream.WithExpectStream(subjects.StreamTickets))
	if err != nil {
		return nil, fmt.Errorf("publishing %s event of ticket %s: %w", ev.Event, ev.Ticket, err)
	}
	if !ack.Duplicate {
		s.published()
	}
	return ack, nil
}

// release asks the responders to free a ticket's slot. It runs even when
// the client has gone: a reservation must not outlive a failed admission.
func (s *Service) release(ctx context.Context, ev subjects.TicketEvent) error {
	reply, err := s.ask(context.WithoutCancel(ctx), subjects.ETARequest{
		Op: subjects.ETARelease, Tenant: ev.Tenant, Ticket: ev.Ticket, Agent: ev.Agent, SlotTime: ev.SlotTime,
	})
	if err != nil {
		return err
	}
	if err := reply.Err(); err != nil {
		return replyError(subjects.ETARelease, err)
	}
	return nil
}

// ask sends one request to the tenant's ETA responders and waits at most
// budget.ETA. No responder, or none in time, is ErrUnavailable.
func (s *Service) ask(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("encoding ETA request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.budget.ETA)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, subjects.ETA(req.Tenant), data)
	if err != nil {
		return subjects.ETAReply{}, unavailable(fmt.Errorf("asking the ETA responders to %s for tenant %s: %w", req.Op, req.Tenant, err))
	}
	var reply subjects.ETAReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return subjects.ETAReply{}, internal(fmt.Errorf("decoding the ETA responder's answer to %s: %w", req.Op, err))
	}
	return reply, nil
}

// replyError maps a responder's refusal (an ETAReply.Err) onto
// admission's errors. The refusals every operation shares are here; each
// caller handles its own ErrETANoSlot first.
func replyError(op string, err error) error {
	cause := fmt.Errorf("ETA responder answered %s: %w", op, err)
	var refusal *subjects.ETAError
	switch {
	case errors.Is(err, subjects.ErrETATenantNotFound):
		return ErrClientNotFound
	case errors.Is(err, subjects.ErrETAHoldGone):
		return ErrHoldGone
	case errors.Is(err, subjects.ErrETATypeMismatch):
		return ErrTypeMismatch
	case op == subjects.ETAConfirm && errors.As(err, &refusal) && refusal.Code == subjects.ETACodeInvalidField:
		return invalidField("slot_id", "is not a slot id issued by validate_eta")
	case errors.Is(err, subjects.ErrETAUnavailable):
		return unavailable(cause)
	}
	// Everything else (another bad request, a slot refusal where none can
	// be, a reply outside the protocol) is a request admission should not
	// have sent, or a responder clock far from ours: ours to fix, not the
	// client's.
	return internal(cause)
}

// ticketStream returns the TICKETS stream, creating it if no worker has
// yet: accepted tickets then wait in it for the first worker.
func (s *Service) ticketStream(ctx context.Context) (jetstream.Stream, error) {
	if st := s.stream.Load(); st != nil {
		return *st, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stream.Load(); st != nil {
		return *st, nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.budget.Publish)
	defer cancel()
	st, err := jskit.OpenStream(sctx, s.js, subjects.TicketsStreamConfig(s.replicas))
	if err != nil {
		return nil, unavailable(fmt.Errorf("opening stream %s: %w", subjects.StreamTickets, err))
	}
	s.stream.Store(&st)
	return st, nil
}

// find looks a ticket of t up (tenants.TicketLookup): the stream's reads
// bounded by budget.Publish, the row's by callTimeout. A stream that
// cannot be read is ErrUnavailable, an event that does not decode
// ErrInternal; a row that cannot be read is the tenants package's error.
func (s *Service) find(ctx context.Context, t tenants.Tenant, ticket string, reads tenants.TicketReads) (tenants.TicketState, error) {
	if subjects.ValidID(ticket) != nil {
		return tenants.TicketState{Tenant: t.ID}, nil
	}
	st, err := s.ticketStream(ctx)
	if err != nil {
		return tenants.TicketState{}, err
	}
	lookup := tenants.TicketLookup{Stream: st, Rows: s.rows, StreamTimeout: s.budget.Publish, RowTimeout: callTimeout}
	found, err := lookup.Find(ctx, t, ticket, reads)
	switch {
	case errors.Is(err, tenants.ErrInvalidTicket):
		return found, internal(err)
	case errors.Is(err, tenants.ErrUnavailable):
		return found, unavailable(err)
	}
	return found, err
}

// latest is a ticket's latest known event: from the stream while a
// message is there, else from the tenant database. found is false when
// there is none.
func (s *Service) latest(ctx context.Context, t tenants.Tenant, ticket string) (ev subjects.TicketEvent, found bool, err error) {
	state, err := s.find(ctx, t, ticket, 0)
	if err != nil {
		return ev, false, err
	}
	ev, _, found = state.Latest()
	return ev, found, nil
}

// Cancel cancels a ticket of t (cancel_ticket). The cancel event goes to
// the stream before the slot is released, so any later ticket in that slot
// comes after the cancel in the stream; then the slot is free at once for
// the next create. Repeating it answers the same, and frees the slot again
// should an earlier release have failed.
func (s *Service) Cancel(ctx context.Context, t tenants.Tenant, ticket string) (Cancelled, error) {
	release, err := s.enter(t.ID)
	if err != nil {
		return Cancelled{}, err
	}
	defer release()
	ev, found, err := s.latest(ctx, t, ticket)
	if err != nil {
		return Cancelled{}, err
	}
	if !found {
		return Cancelled{}, ErrTicketNotFound
	}
	if ev.Event != subjects.TicketCancelled {
		at := subjects.Stamp(s.now())
		ev.Event = subjects.TicketCancelled
		ev.CancelledAt = &at
		if err := s.publish(ctx, ev, ev.Ticket+":cancel"); err != nil {
			return Cancelled{}, unavailable(err)
		}
	}
	if err := s.release(ctx, ev); err != nil {
		return Cancelled{}, fmt.Errorf("releasing the slot of cancelled ticket %s: %w", ticket, err)
	}
	return Cancelled{TicketID: ev.Ticket}, nil
}

// Get reports a ticket of t (GET /tickets/{ticket_id}): its latest event
// still in the stream, or its row in the tenant database, the row winning
// over a create still in the stream (a worker may have applied a cancel
// whose message is gone while the create's is not).
func (s *Service) Get(ctx context.Context, t tenants.Tenant, ticket string) (Ticket, error) {
	if subjects.ValidID(ticket) != nil {
		return Ticket{}, ErrTicketNotFound
	}
	state, err := s.find(ctx, t, ticket, tenants.ReadRowUnderCreate)
	if err != nil {
		return Ticket{}, err
	}
	ev, status, found := state.Latest()
	if !found {
		return Ticket{}, ErrTicketNotFound
	}
	return Ticket{TicketID: ev.Ticket, Type: ev.Type, Status: status, Agent: ev.Agent,
		SlotTime: ev.SlotTime, Deadline: ev.Deadline, CreatedAt: ev.CreatedAt}, nil
}

// ValidateETA makes a pending hold of a typ slot for t (validate_eta).
func (s *Service) ValidateETA(ctx context.Context, t tenants.Tenant, typ string) (Hold, error) {
	sla, err := ticketType(typ)
	if err != nil {
		return Hold{}, err
	}
	release, err := s.enterNew(ctx, t.ID)
	if err != nil {
		return Hold{}, err
	}
	defer release()
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAHold, Tenant: t.ID, Type: typ, CreatedAt: subjects.Stamp(s.now()),
		AgentsRev: s.agentsRev(t.ID),
	})
	if err != nil {
		return Hold{}, err
	}
	switch err := reply.Err(); {
	case err == nil:
		if reply.HoldExpiresAt == nil {
			return Hold{}, internal(errors.New("ETA responder's hold has no expiry"))
		}
		return Hold{SlotID: reply.SlotID, SlotTime: reply.SlotTime, ExpiresAt: *reply.HoldExpiresAt}, nil
	case errors.Is(err, subjects.ErrETANoSlot):
		return Hold{}, &NoSlotError{Op: subjects.OpValidateETA, Type: typ, SLA: sla}
	default:
		return Hold{}, replyError(subjects.ETAHold, err)
	}
}

// AllocateSlot turns a pending hold into a ticket of t (allocate_slot).
// The ticket's created_at is the instant of the validate_eta that made
// the hold, as the responder reports it.
func (s *Service) AllocateSlot(ctx context.Context, t tenants.Tenant, typ, slotID string) (Allocated, error) {
	sla, err := ticketType(typ)
	if err != nil {
		return Allocated{}, err
	}
	if _, _, _, err := subjects.ParseSlotID(slotID); err != nil {
		return Allocated{}, invalidField("slot_id", "is not a slot id issued by validate_eta")
	}
	release, err := s.enter(t.ID)
	if err != nil {
		return Allocated{}, err
	}
	defer release()
	ticket := subjects.NewTicketID()
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAConfirm, Tenant: t.ID, Type: typ, SlotID: slotID, Ticket: ticket,
	})
	if err != nil {
		return Allocated{}, err
	}
	if err := reply.Err(); err != nil {
		return Allocated{}, replyError(subjects.ETAConfirm, err)
	}
	createdAt := subjects.Stamp(reply.CreatedAt)
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: ticket, Type: typ, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	if _, err := s.publishCreated(ctx, t, ev); err != nil {
		return Allocated{}, err
	}
	return Allocated{TicketID: ticket}, nil
}
