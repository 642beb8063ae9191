package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

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
	Content
}

// Content is a new ticket's optional subject and description
// (create_ticket, allocate_slot); "" is none. subjects.CheckContent
// bounds it.
type Content struct{ Subject, Description string }

// check refuses content no ticket may carry: a *FieldError naming the
// member, nothing asked of anyone.
func (c Content) check() error {
	if err := subjects.CheckContent(c.Subject, c.Description); err != nil {
		ce, _ := errors.AsType[*subjects.ContentError](err)
		return invalidField(ce.Field, "%s", ce.Reason)
	}
	return nil
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

// Create admits a new ticket of type typ with content c for t
// (create_ticket). idemKey, when not nil, is the request's
// Idempotency-Key, already checked by the transport: the same key with
// the same type and content gives the same ticket.
func (s *Service) Create(ctx context.Context, t tenants.Tenant, typ string, c Content, idemKey *string) (Accepted, error) {
	if _, err := ticketType(typ); err != nil {
		return Accepted{}, err
	}
	if err := c.check(); err != nil {
		return Accepted{}, err
	}
	release, err := s.enterNew(ctx, t.ID)
	if err != nil {
		return Accepted{}, err
	}
	defer release()
	if idemKey != nil {
		return s.createIdempotent(ctx, t, typ, c, *idemKey)
	}
	nonce := subjects.NewTicketNonce()
	acc, unknown, err := s.admit(ctx, t, typ, c, nonce, false)
	if unknown {
		s.releaseNonce(ctx, t.ID, nonce, err)
	}
	return acc, err
}

// admit asks the responders to reserve a slot for a ticket whose id has
// nonce and whose record carries c, and returns the ticket: the
// responders' write of its slot record is its admission, nothing else is
// written. takeover asks for the
// tenant's ticket with that nonce first (an Idempotency-Key takeover).
//
// A rejection writes nothing, and neither does a request no responder
// received. unknown reports an answer that leaves open whether the ticket
// was written (no reply in time, a reply this version cannot read, a
// responder that could not finish): err is then set, and the caller
// decides whether to release the nonce's ticket (releaseNonce).
func (s *Service) admit(ctx context.Context, t tenants.Tenant, typ string, c Content, nonce string, takeover bool) (acc Accepted, unknown bool, err error) {
	sla, err := ticketType(typ)
	if err != nil {
		return Accepted{}, false, err
	}
	createdAt := subjects.Stamp(s.now())
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAReserve, Tenant: t.ID, Type: typ, CreatedAt: createdAt, Nonce: nonce, Takeover: takeover,
		AgentsRev: s.agentsRev(t.ID), Subject: c.Subject, Description: c.Description,
	})
	if err != nil {
		// A request no responder received wrote nothing.
		return Accepted{}, !errors.Is(err, nats.ErrNoResponders), asOutage(err)
	}
	switch err := reply.Err(); {
	case err == nil:
	case errors.Is(err, subjects.ErrETANoSlot):
		return Accepted{}, false, &NoSlotError{Op: subjects.OpCreateTicket, Type: typ, SLA: sla, Fits: fitsOf(reply.Fits)}
	default:
		return Accepted{}, outcomeUnknown(err), replyError(subjects.ETAReserve, err)
	}
	if s.afterReserve != nil {
		s.afterReserve(reply.Ticket)
	}
	// A takeover may answer the ticket an earlier request admitted: its
	// created_at is the one that counts.
	if takeover && !reply.CreatedAt.IsZero() {
		createdAt = subjects.Stamp(reply.CreatedAt)
	}
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: reply.Ticket, Type: typ, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	// A ticket a takeover finds may have been moved since its admission
	// (feasibility admission): its id names the slot it was admitted in,
	// the reply the one it holds now.
	if err := checkAdmitted(ev, nonce, takeover); err != nil {
		return Accepted{}, true, internal(fmt.Errorf("the ETA responder's answer to %s: %w", subjects.ETAReserve, err))
	}
	s.published()
	return acceptedOf(ev), false, nil
}

// fitsOf is the known ticket types of a refusal's Fits, in the API's
// order and never nil (a responder that names none: nothing fits).
func fitsOf(fits []string) []string {
	out := []string{}
	for _, typ := range ticketTypes {
		if slices.Contains(fits, typ) {
			out = append(out, typ)
		}
	}
	return out
}

// asOutage is an error of ask as the client of an admission sees it: a
// reply that does not decode left the outcome unknown like a lost one,
// and is answered as an outage too (the cause is logged as ours).
func asOutage(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return unavailable(err)
}

// outcomeUnknown reports whether a responder's refusal leaves open
// whether it wrote: a responder that could not finish (its write may
// have landed), or a reply outside the protocol. Every other refusal is
// decided before any write.
func outcomeUnknown(refusal error) bool {
	return errors.Is(refusal, subjects.ErrETAUnavailable) || errors.Is(refusal, subjects.ErrETAProtocol)
}

// checkAdmitted checks the ticket a responder says it admitted before a
// client is told of it: an id made of nonce that names the reply's slot
// (unless moved: the ticket may have moved since, the reply naming its
// current slot), and an event that passes TicketEvent.Check (a slot
// inside the type's window of created_at), as the allocators will
// require.
func checkAdmitted(ev subjects.TicketEvent, nonce string, moved bool) error {
	agent, minute, got, err := subjects.ParseTicketID(ev.Ticket)
	switch {
	case err != nil:
		return err
	case got != nonce:
		return fmt.Errorf("ticket %s is not the one of nonce %s", ev.Ticket, nonce)
	case !moved && (agent != ev.Agent || !minute.Equal(ev.SlotTime)):
		return fmt.Errorf("ticket %s does not name the slot %s %s", ev.Ticket, ev.Agent, ev.SlotTime.Format(time.RFC3339))
	}
	return ev.Check(ev.Tenant, ev.Ticket)
}

func acceptedOf(ev subjects.TicketEvent) Accepted {
	return Accepted{TicketID: ev.Ticket, Type: ev.Type, Agent: ev.Agent,
		SlotTime: ev.SlotTime, Deadline: ev.Deadline, CreatedAt: ev.CreatedAt}
}

// releaseNonce asks the responders to release the tenant's ticket with
// nonce, if they wrote one: what follows an admission whose outcome is
// unknown (cause), so that a client told 503 is not left with a ticket.
// It runs even when the client has gone, and only logs a failure. The
// answer says whether the responders confirmed that no ticket of the
// nonce is live.
func (s *Service) releaseNonce(ctx context.Context, tenant, nonce string, cause error) bool {
	reply, err := s.ask(context.WithoutCancel(ctx), subjects.ETARequest{Op: subjects.ETARelease, Tenant: tenant, Nonce: nonce})
	if err == nil {
		err = reply.Err()
	}
	if err != nil {
		s.logger.Error("an admission's outcome is unknown and releasing its ticket failed too; if it was written, it stays",
			slog.String("tenant", tenant), slog.String("nonce", nonce), slog.Any("cause", cause), slog.Any("err", err))
		return false
	}
	if reply.Ticket != "" {
		s.published()
		s.logger.Warn("released the ticket of an admission whose outcome was unknown",
			slog.String("tenant", tenant), slog.String("ticket", reply.Ticket), slog.Any("cause", cause))
	}
	return true
}

// ask sends one request to the tenant's ETA responders and waits at most
// budget.ETA. No responder, or none in time, is ErrUnavailable; a reply
// that does not decode is ErrInternal.
func (s *Service) ask(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	return s.askWithin(ctx, req, s.budget.ETA)
}

// askWithin is ask with its own patience: a re-plan moves many tickets,
// one atomic batch each, and needs longer than one admission.
func (s *Service) askWithin(ctx context.Context, req subjects.ETARequest, patience time.Duration) (subjects.ETAReply, error) {
	// The responders write nothing once this ask has given up.
	req.Deadline = s.now().Add(patience).UTC()
	data, err := json.Marshal(req)
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("encoding ETA request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, patience)
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
	case errors.Is(err, subjects.ErrETANonceReleased):
		return fmt.Errorf("%w: %w", errNonceReleased, cause)
	case op == subjects.ETAConfirm && errors.As(err, &refusal) && refusal.Code == subjects.ETACodeInvalidField && refusal.Field == "slot_id":
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

// find looks a ticket of t up (tenants.TicketLookup): each read of its
// slot bucket bounded by budget.Call, the row's by callTimeout. A bucket
// that cannot be read is ErrUnavailable, a record that does not decode
// ErrInternal; a row that cannot be read is the tenants package's error.
func (s *Service) find(ctx context.Context, t tenants.Tenant, ticket string, reads tenants.TicketReads) (tenants.TicketState, error) {
	lookup := tenants.TicketLookup{Slots: s.slotBucket, Parked: s.parkedStream, Rows: s.rows, SlotTimeout: s.budget.Call,
		RowTimeout: callTimeout}
	found, err := lookup.Find(ctx, t, ticket, reads)
	switch {
	case errors.Is(err, tenants.ErrInvalidTicket):
		return found, internal(err)
	case errors.Is(err, tenants.ErrUnavailable):
		return found, unavailable(err)
	}
	return found, err
}

// Cancel cancels a ticket of t (cancel_ticket): the responders write the
// ticket's released record, which frees its slot at once for the next
// create and is the cancel the allocators apply to its row. Repeating it
// answers the same and writes nothing more.
func (s *Service) Cancel(ctx context.Context, t tenants.Tenant, ticket string) (Cancelled, error) {
	release, err := s.enter(t.ID)
	if err != nil {
		return Cancelled{}, err
	}
	defer release()
	state, err := s.find(ctx, t, ticket, 0)
	if err != nil {
		return Cancelled{}, err
	}
	ev, status, found := state.Latest()
	switch {
	case !found:
		return Cancelled{}, ErrTicketNotFound
	case status == subjects.StatusCancelled:
		return Cancelled{TicketID: ev.Ticket}, nil
	}
	if _, _, _, err := subjects.ParseTicketID(ev.Ticket); err != nil {
		return s.cancelRow(ctx, t, ev)
	}
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETARelease, Tenant: t.ID, Ticket: ev.Ticket, Type: ev.Type, CreatedAt: ev.CreatedAt,
		Agent: ev.Agent, SlotTime: ev.SlotTime,
	})
	if err != nil {
		return Cancelled{}, fmt.Errorf("releasing the slot of ticket %s: %w", ticket, err)
	}
	if err := reply.Err(); err != nil {
		return Cancelled{}, replyError(subjects.ETARelease, err)
	}
	s.published()
	return Cancelled{TicketID: ev.Ticket}, nil
}

// cancelRow cancels a ticket of an earlier version, whose id names no
// slot: it lives only in its tenant database (no slot record can carry
// it, and its minute is in no slot bucket), so the row is cancelled
// there directly.
func (s *Service) cancelRow(ctx context.Context, t tenants.Tenant, ev subjects.TicketEvent) (Cancelled, error) {
	at := subjects.Stamp(s.now())
	ev.Event, ev.CancelledAt = subjects.TicketCancelled, &at
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := s.rows.ApplyCancelled(cctx, t, ev); err != nil {
		return Cancelled{}, err
	}
	return Cancelled{TicketID: ev.Ticket}, nil
}

// Get reports a ticket of t (GET /tickets/{ticket_id}): its newest slot
// record, or its row in the tenant database, the row winning over a
// create record (allocated once a worker has written it).
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
		SlotTime: ev.SlotTime, Deadline: ev.Deadline, CreatedAt: ev.CreatedAt,
		Content: Content{Subject: ev.Subject, Description: ev.Description}}, nil
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
		s.published()
		return Hold{SlotID: reply.SlotID, SlotTime: reply.SlotTime, ExpiresAt: *reply.HoldExpiresAt}, nil
	case errors.Is(err, subjects.ErrETANoSlot):
		return Hold{}, &NoSlotError{Op: subjects.OpValidateETA, Type: typ, SLA: sla}
	default:
		return Hold{}, replyError(subjects.ETAHold, err)
	}
}

// AllocateSlot turns a pending hold into a ticket of t with content c
// (allocate_slot).
// The ticket's created_at is the instant of the validate_eta that made
// the hold, as the responder reports it. An outcome left unknown (see
// admit) releases the ticket the confirm may have written.
func (s *Service) AllocateSlot(ctx context.Context, t tenants.Tenant, typ, slotID string, c Content) (Allocated, error) {
	sla, err := ticketType(typ)
	if err != nil {
		return Allocated{}, err
	}
	if err := c.check(); err != nil {
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
	nonce := subjects.NewTicketNonce()
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAConfirm, Tenant: t.ID, Type: typ, SlotID: slotID, Nonce: nonce,
		Subject: c.Subject, Description: c.Description,
	})
	if err != nil {
		if !errors.Is(err, nats.ErrNoResponders) {
			s.releaseNonce(ctx, t.ID, nonce, err)
		}
		return Allocated{}, asOutage(err)
	}
	if err := reply.Err(); err != nil {
		if outcomeUnknown(err) {
			s.releaseNonce(ctx, t.ID, nonce, err)
		}
		return Allocated{}, replyError(subjects.ETAConfirm, err)
	}
	if s.afterReserve != nil {
		s.afterReserve(reply.Ticket)
	}
	createdAt := subjects.Stamp(reply.CreatedAt)
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: reply.Ticket, Type: typ, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	if err := checkAdmitted(ev, nonce, false); err != nil {
		err = internal(fmt.Errorf("the ETA responder's answer to %s: %w", subjects.ETAConfirm, err))
		s.releaseNonce(ctx, t.ID, nonce, err)
		return Allocated{}, err
	}
	s.published()
	return Allocated{TicketID: reply.Ticket}, nil
}
