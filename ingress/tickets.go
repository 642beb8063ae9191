package ingress

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// ticketService is ticket admission as every transport sees it: the HTTP
// handlers and the NATS API call the same methods, so both give the same
// answers. It never writes slot buckets: it asks the ETA responders
// (reserve, hold, confirm, release) and publishes ticket events to the
// TICKETS stream, which the allocator workers write into tenant databases.
type ticketService struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	registry *tenants.Registry
	rows     *tenants.Tickets
	agents   *tenants.Agents // nil: no read-your-writes of agent changes
	// budget is subjects.DefaultBudget with Config.ETATimeout: its ETA
	// bounds a request to the responders, its Publish one publish to, or
	// read from, the TICKETS stream.
	budget   subjects.Budget
	replicas int
	logger   *slog.Logger
	now      func() time.Time
	// beforePublish is Config.BeforePublish (nil: nothing).
	beforePublish func(ticket string)
	overload      *Overload

	mu     sync.Mutex
	stream jetstream.Stream   // TICKETS, once found or created
	idem   jetstream.KeyValue // the idempotency bucket, once found or created
}

func newTicketService(cfg Config, logger *slog.Logger, now func() time.Time, overload *Overload) *ticketService {
	s := &ticketService{
		nc: cfg.NC, js: cfg.JS, registry: cfg.Registry, rows: cfg.Tickets, agents: cfg.Agents,
		budget: subjects.DefaultBudget.WithETA(cfg.ETATimeout), replicas: cfg.Replicas, logger: logger, now: now,
		beforePublish: cfg.BeforePublish, overload: overload,
	}
	return s
}

// answer is a successful answer: an HTTP status and its JSON body.
type answer struct {
	status int
	body   any
}

type createTicketRequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
}

type ticketIDRequest struct {
	TicketID string `json:"ticket_id"`
}

type validateETARequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
}

type allocateSlotRequest struct {
	ClientID   string `json:"client_id"`
	TicketType string `json:"ticket_type"`
	SlotID     string `json:"slot_id"`
}

// acceptedBody is create_ticket's 201.
type acceptedBody struct {
	Status     string `json:"status"`
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
	AgentID    string `json:"agent_id"`
	CreatedAt  string `json:"created_at"`
}

// ticketBody is GET /tickets/{ticket_id}'s 200.
type ticketBody struct {
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	Status     string `json:"status"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
	AgentID    string `json:"agent_id"`
	CreatedAt  string `json:"created_at"`
}

type ticketStatusBody struct {
	Status   string `json:"status"`
	TicketID string `json:"ticket_id"`
}

type holdBody struct {
	Status        string `json:"status"`
	SlotID        string `json:"slot_id"`
	SlotTime      string `json:"slot_time"`
	HoldExpiresAt string `json:"hold_expires_at"`
}

// ticketIDEncoding spells ticket ids in lower-case base32, so they are
// valid ids ([a-z0-9_-]) and subject tokens.
var ticketIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newTicketID is "t" and 100 random bits: unguessable, so a ticket id
// reveals nothing and cannot be enumerated.
func newTicketID() string {
	var b [13]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "t" + ticketIDEncoding.EncodeToString(b[:])[:20]
}

// ticketType checks a ticket_type and returns its SLA.
func ticketType(typ string) (time.Duration, error) {
	sla, ok := subjects.SLA(typ)
	if !ok {
		return 0, errInvalidField("ticket_type", "must be %q, %q or %q (case-sensitive)",
			subjects.Gold, subjects.Silver, subjects.Bronze)
	}
	return sla, nil
}

// agentsRev is the revision of tenant's last agent write that this
// process knows of, for the ETA requests that read the tenant's agents
// (reserve and hold): the responder answers them only from a calendar
// that has applied it, so a tenant's next request sees the agent it just
// registered or made unavailable.
func (s *ticketService) agentsRev(tenant string) uint64 {
	if s.agents == nil {
		return 0
	}
	return s.agents.Revision(tenant)
}

// stamp is an instant as the service records it: UTC, to the microsecond
// that Postgres keeps, so that it reads the same from every store.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// create admits a new ticket (create_ticket). The caller has checked that
// req.ClientID is t's id. idemKey, when not nil, is the request's valid
// Idempotency-Key.
func (s *ticketService) create(ctx context.Context, t tenants.Tenant, req createTicketRequest, idemKey *string) (answer, error) {
	if _, err := ticketType(req.TicketType); err != nil {
		return answer{}, err
	}
	release, err := s.overload.enterNewAdmission(ctx, t.ID)
	if err != nil {
		return answer{}, err
	}
	defer release()
	if idemKey != nil {
		return s.createIdempotent(ctx, t, req, *idemKey)
	}
	body, err := s.admit(ctx, t, req.TicketType, newTicketID())
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusCreated, body: body}, nil
}

// admit reserves a slot for ticket, publishes it and returns the 201 body.
// A rejection or an outage leaves nothing behind.
func (s *ticketService) admit(ctx context.Context, t tenants.Tenant, typ, ticket string) (acceptedBody, error) {
	sla, err := ticketType(typ)
	if err != nil {
		return acceptedBody{}, err
	}
	createdAt := stamp(s.now())
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAReserve, Tenant: t.ID, Type: typ, CreatedAt: createdAt, Ticket: ticket,
		AgentsRev: s.agentsRev(t.ID),
	})
	if err != nil {
		return acceptedBody{}, err
	}
	if err := reply.Err(); errors.Is(err, subjects.ErrETANoSlot) {
		return acceptedBody{}, &apiError{status: http.StatusConflict, code: codeSLAUnavailable, bodyStatus: statusRejected,
			message: fmt.Sprintf("ticket_type: no agent-minute is free within the %s SLA window (%s)", typ, sla)}
	} else if err != nil {
		return acceptedBody{}, replyError(subjects.ETAReserve, err)
	}
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: ticket, Type: typ, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	ev, err = s.publishCreated(ctx, t, ev)
	if err != nil {
		return acceptedBody{}, err
	}
	return acceptedOf(ev), nil
}

func acceptedOf(ev subjects.TicketEvent) acceptedBody {
	return acceptedBody{
		Status: subjects.StatusAccepted, TicketID: ev.Ticket, TicketType: ev.Type,
		SlotTime: timestamp(ev.SlotTime), Deadline: timestamp(ev.Deadline), AgentID: ev.Agent,
		CreatedAt: timestamp(ev.CreatedAt),
	}
}

// publishCreated publishes a confirmed reservation as a ticket. If the
// publish fails, the reservation is released and the caller answers 503:
// a client never gets a 201 for a ticket that is not in the stream. A
// publish whose acknowledgement was lost may still have been stored, so
// the stream (and the tenant database, if a worker was quick) is asked
// first; only a ticket found in neither is released.
//
// It returns the event the stream holds for the ticket: ev, unless the
// ticket id was published before with another slot (an Idempotency-Key
// takeover reuses the id of a twin presumed dead; should the twin's
// publish have landed after all, the stream deduplicates ours): then that
// earlier event is the ticket, and ev's reservation is released.
func (s *ticketService) publishCreated(ctx context.Context, t tenants.Tenant, ev subjects.TicketEvent) (subjects.TicketEvent, error) {
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
	if got, found, lerr := s.find(ctx, t, ev.Ticket); lerr == nil && found && got.Event == subjects.TicketCreated {
		log.Warn("ticket publish reported an error but the ticket is stored", slog.Any("err", err))
		return got, nil
	} else if lerr != nil {
		// Unknown whether the create landed: a cancel makes sure that, if
		// it did, the ticket ends cancelled rather than holding a slot
		// that is about to be released. Workers apply a cancel whichever
		// event arrives first.
		cancelled := ev
		cancelled.Event = subjects.TicketCancelled
		at := stamp(s.now())
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
	return subjects.TicketEvent{}, errUnavailable(fmt.Errorf("publishing ticket %s: %w", ev.Ticket, err))
}

// publishedBefore handles a create the stream deduplicated: the ticket id
// already has an event. If it names ev's slot it is ev; otherwise it is
// the ticket, and ev's reservation is released.
func (s *ticketService) publishedBefore(ctx context.Context, t tenants.Tenant, ev subjects.TicketEvent, log *slog.Logger) (subjects.TicketEvent, error) {
	got, found, err := s.find(ctx, t, ev.Ticket)
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
		return subjects.TicketEvent{}, errUnavailable(fmt.Errorf("ticket %s was published before and cannot be read back: %w",
			ev.Ticket, err))
	}
	log.Warn("ticket id was published before with another slot; answering that ticket",
		slog.String("agent", got.Agent), slog.Time("slot_time", got.SlotTime))
	return got, nil
}

// publish sends one ticket event to the TICKETS stream, deduplicated by
// msgID within the stream's duplicate window.
func (s *ticketService) publish(ctx context.Context, ev subjects.TicketEvent, msgID string) error {
	_, err := s.publishAck(ctx, ev, msgID)
	return err
}

// publishAck is publish, with the stream's acknowledgement (Duplicate
// says the message id was already there).
func (s *ticketService) publishAck(ctx context.Context, ev subjects.TicketEvent, msgID string) (*jetstream.PubAck, error) {
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
		s.overload.published()
	}
	return ack, nil
}

// release asks the responders to free a ticket's slot. It runs even when
// the client has gone: a reservation must not outlive a failed admission.
func (s *ticketService) release(ctx context.Context, ev subjects.TicketEvent) error {
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
// budget.ETA. No responder, or none in time, is an outage (503).
func (s *ticketService) ask(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("encoding ETA request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, s.budget.ETA)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, subjects.ETA(req.Tenant), data)
	if err != nil {
		return subjects.ETAReply{}, errUnavailable(fmt.Errorf("asking the ETA responders to %s for tenant %s: %w", req.Op, req.Tenant, err))
	}
	var reply subjects.ETAReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return subjects.ETAReply{}, errInternal(fmt.Errorf("decoding the ETA responder's answer to %s: %w", req.Op, err))
	}
	return reply, nil
}

// replyError maps a responder's refusal (an ETAReply.Err) onto the API's
// answer. The refusals every operation shares are here; each caller
// handles its own ErrETANoSlot first.
func replyError(op string, err error) error {
	cause := fmt.Errorf("ETA responder answered %s: %w", op, err)
	var refusal *subjects.ETAError
	switch {
	case errors.Is(err, subjects.ErrETATenantNotFound):
		return errClientNotFound
	case errors.Is(err, subjects.ErrETAHoldGone):
		return newError(http.StatusGone, codeHoldExpired,
			"slot_id: no live hold (it expired, was already allocated, or was never issued)")
	case errors.Is(err, subjects.ErrETATypeMismatch):
		return newError(http.StatusConflict, codeTypeMismatch,
			"ticket_type: the held slot is outside this type's SLA window")
	case op == subjects.ETAConfirm && errors.As(err, &refusal) && refusal.Code == subjects.ETACodeInvalidField:
		return errInvalidField("slot_id", "is not a slot id issued by validate_eta")
	case errors.Is(err, subjects.ErrETAUnavailable):
		return errUnavailable(cause)
	}
	// Everything else (another bad request, a slot refusal where none can
	// be, a reply outside the protocol) is a request ingress should not
	// have sent, or a responder clock far from ours: ours to fix, not the
	// client's.
	return errInternal(cause)
}

// ticketStream returns the TICKETS stream, creating it if no worker has
// yet: accepted tickets then wait in it for the first worker.
func (s *ticketService) ticketStream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream != nil {
		return s.stream, nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.budget.Publish)
	defer cancel()
	st, err := s.js.Stream(sctx, subjects.StreamTickets)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = s.js.CreateStream(sctx, subjects.TicketsStreamConfig(s.replicas))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = s.js.Stream(sctx, subjects.StreamTickets)
		}
	}
	if err != nil {
		return nil, errUnavailable(fmt.Errorf("opening stream %s: %w", subjects.StreamTickets, err))
	}
	s.stream = st
	return st, nil
}

// latestEvent is the newest event of a ticket still in the stream (not
// yet consumed by a worker). found is false when there is none.
func (s *ticketService) latestEvent(ctx context.Context, tenant, ticket string) (ev subjects.TicketEvent, found bool, err error) {
	st, err := s.ticketStream(ctx)
	if err != nil {
		return ev, false, err
	}
	gctx, cancel := context.WithTimeout(ctx, s.budget.Publish)
	defer cancel()
	msg, err := st.GetLastMsgForSubject(gctx, subjects.TicketSubject(tenant, ticket))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ev, false, nil
	}
	if err != nil {
		return ev, false, errUnavailable(fmt.Errorf("reading ticket %s from the stream: %w", ticket, err))
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return ev, false, errInternal(fmt.Errorf("decoding event of ticket %s: %w", ticket, err))
	}
	if ev.Tenant != tenant || ev.Ticket != ticket {
		return ev, false, errInternal(fmt.Errorf("event on %s names tenant %q ticket %q", msg.Subject, ev.Tenant, ev.Ticket))
	}
	return ev, true, nil
}

// row is the ticket's row in the tenant database, if a worker wrote it.
func (s *ticketService) row(ctx context.Context, t tenants.Tenant, ticket string) (tenants.TicketRow, bool, error) {
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := s.rows.Get(gctx, t, ticket)
	if errors.Is(err, tenants.ErrTicketNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("reading ticket %s from the tenant database: %w", ticket, err)
	}
	return r, true, nil
}

func eventOf(tenant string, r tenants.TicketRow) subjects.TicketEvent {
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: tenant, Ticket: r.ID, Type: r.Type, Agent: r.Agent,
		SlotTime: r.SlotTime.UTC(), CreatedAt: r.CreatedAt.UTC(), Deadline: r.Deadline.UTC(),
	}
	if r.Status == subjects.StatusCancelled {
		ev.Event = subjects.TicketCancelled
		ev.CancelledAt = r.CancelledAt
	}
	return ev
}

// find returns a ticket's latest known event: from the stream while a
// message is there, else from the tenant database. The stream is read
// first: a worker deletes the message only after its commit, so a ticket
// is never missing from both.
func (s *ticketService) find(ctx context.Context, t tenants.Tenant, ticket string) (subjects.TicketEvent, bool, error) {
	if subjects.ValidID(ticket) != nil {
		return subjects.TicketEvent{}, false, nil
	}
	ev, found, err := s.latestEvent(ctx, t.ID, ticket)
	if err != nil || found {
		return ev, found, err
	}
	r, found, err := s.row(ctx, t, ticket)
	if err != nil || !found {
		return subjects.TicketEvent{}, false, err
	}
	return eventOf(t.ID, r), true, nil
}

// cancel cancels a ticket of t (cancel_ticket). The cancel event goes to
// the stream before the slot is released, so any later ticket in that slot
// comes after the cancel in the stream; then the slot is free at once for
// the next create. Repeating it answers the same, and frees the slot again
// should an earlier release have failed.
func (s *ticketService) cancel(ctx context.Context, t tenants.Tenant, ticket string) (answer, error) {
	release, err := s.overload.enterAdmission(t.ID)
	if err != nil {
		return answer{}, err
	}
	defer release()
	ev, found, err := s.find(ctx, t, ticket)
	if err != nil {
		return answer{}, err
	}
	if !found {
		return answer{}, errTicketNotFound
	}
	if ev.Event != subjects.TicketCancelled {
		at := stamp(s.now())
		ev.Event = subjects.TicketCancelled
		ev.CancelledAt = &at
		if err := s.publish(ctx, ev, ev.Ticket+":cancel"); err != nil {
			return answer{}, errUnavailable(err)
		}
	}
	if err := s.release(ctx, ev); err != nil {
		return answer{}, fmt.Errorf("releasing the slot of cancelled ticket %s: %w", ticket, err)
	}
	return answer{status: http.StatusOK, body: ticketStatusBody{Status: subjects.StatusCancelled, TicketID: ev.Ticket}}, nil
}

// get reports a ticket of t (GET /tickets/{ticket_id}).
func (s *ticketService) get(ctx context.Context, t tenants.Tenant, ticket string) (answer, error) {
	if subjects.ValidID(ticket) != nil {
		return answer{}, errTicketNotFound
	}
	ev, inStream, err := s.latestEvent(ctx, t.ID, ticket)
	if err != nil {
		return answer{}, err
	}
	status := subjects.StatusCancelled
	if !inStream || ev.Event == subjects.TicketCreated {
		r, inDB, err := s.row(ctx, t, ticket)
		switch {
		case err != nil:
			return answer{}, err
		case inDB:
			// The row is the more advanced truth: a worker may have applied
			// a cancel whose message is gone while the create's is not.
			ev, status = eventOf(t.ID, r), r.Status
		case inStream:
			status = subjects.StatusAccepted
		default:
			return answer{}, errTicketNotFound
		}
	}
	return answer{status: http.StatusOK, body: ticketBody{
		TicketID: ev.Ticket, TicketType: ev.Type, Status: status, SlotTime: timestamp(ev.SlotTime),
		Deadline: timestamp(ev.Deadline), AgentID: ev.Agent, CreatedAt: timestamp(ev.CreatedAt),
	}}, nil
}

// client resolves the client_id of an internal request: malformed is 400,
// unknown is 404 client_not_found.
func (s *ticketService) client(ctx context.Context, clientID string) (tenants.Tenant, error) {
	if subjects.ValidID(clientID) != nil {
		return tenants.Tenant{}, errInvalidField("client_id", "must be 1-%d characters of [a-z0-9_-]", subjects.MaxIDLen)
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	t, err := s.registry.Get(gctx, clientID)
	if errors.Is(err, tenants.ErrTenantNotFound) {
		return t, errClientNotFound
	}
	if err != nil {
		return t, fmt.Errorf("loading client %s: %w", clientID, err)
	}
	return t, nil
}

// validateETA makes a pending hold (validate_eta).
func (s *ticketService) validateETA(ctx context.Context, req validateETARequest) (answer, error) {
	t, err := s.client(ctx, req.ClientID)
	if err != nil {
		return answer{}, err
	}
	sla, err := ticketType(req.TicketType)
	if err != nil {
		return answer{}, err
	}
	release, err := s.overload.enterNewAdmission(ctx, t.ID)
	if err != nil {
		return answer{}, err
	}
	defer release()
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAHold, Tenant: t.ID, Type: req.TicketType, CreatedAt: stamp(s.now()),
		AgentsRev: s.agentsRev(t.ID),
	})
	if err != nil {
		return answer{}, err
	}
	switch err := reply.Err(); {
	case err == nil:
		if reply.HoldExpiresAt == nil {
			return answer{}, errInternal(errors.New("ETA responder's hold has no expiry"))
		}
		return answer{status: http.StatusOK, body: holdBody{
			Status: "available", SlotID: reply.SlotID, SlotTime: timestamp(reply.SlotTime),
			HoldExpiresAt: timestamp(*reply.HoldExpiresAt),
		}}, nil
	case errors.Is(err, subjects.ErrETANoSlot):
		return answer{}, &apiError{status: http.StatusConflict, code: codeSLAUnavailable, bodyStatus: statusUnavailable,
			message: fmt.Sprintf("ticket_type: no agent-minute is free within the %s SLA window (%s)", req.TicketType, sla)}
	default:
		return answer{}, replyError(subjects.ETAHold, err)
	}
}

// allocateSlot turns a pending hold into a ticket (allocate_slot). The
// ticket's created_at is the instant of the validate_eta that made the
// hold, as the responder reports it.
func (s *ticketService) allocateSlot(ctx context.Context, req allocateSlotRequest) (answer, error) {
	t, err := s.client(ctx, req.ClientID)
	if err != nil {
		return answer{}, err
	}
	sla, err := ticketType(req.TicketType)
	if err != nil {
		return answer{}, err
	}
	if _, _, _, err := subjects.ParseSlotID(req.SlotID); err != nil {
		return answer{}, errInvalidField("slot_id", "is not a slot id issued by validate_eta")
	}
	release, err := s.overload.enterAdmission(t.ID)
	if err != nil {
		return answer{}, err
	}
	defer release()
	ticket := newTicketID()
	reply, err := s.ask(ctx, subjects.ETARequest{
		Op: subjects.ETAConfirm, Tenant: t.ID, Type: req.TicketType, SlotID: req.SlotID, Ticket: ticket,
	})
	if err != nil {
		return answer{}, err
	}
	if err := reply.Err(); err != nil {
		return answer{}, replyError(subjects.ETAConfirm, err)
	}
	createdAt := stamp(reply.CreatedAt)
	ev := subjects.TicketEvent{
		Event: subjects.TicketCreated, Tenant: t.ID, Ticket: ticket, Type: req.TicketType, Agent: reply.Agent,
		SlotTime: reply.SlotTime.UTC(), CreatedAt: createdAt, Deadline: createdAt.Add(sla),
	}
	if _, err := s.publishCreated(ctx, t, ev); err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusCreated, body: ticketStatusBody{Status: subjects.StatusAllocated, TicketID: ticket}}, nil
}
