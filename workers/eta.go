package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
	"tms/tenants"
	"tms/workers/calendar"
)

// Handle answers one ETA request as if it arrived on subject; Run's
// subscription calls it for every message. It never panics on input and
// changes nothing for a request it refuses.
func (r *Responder) Handle(ctx context.Context, subject string, data []byte) subjects.ETAReply {
	req, err := decodeRequest(subject, data)
	var reply subjects.ETAReply
	if err == nil {
		reply, err = r.serve(ctx, req)
	}
	if err != nil {
		reply = replyOf(err)
		if errors.Is(err, ErrNoSlot) {
			reply.Fits = r.fits(req) // what the asker could create instead
		}
	}
	r.logAnswer(ctx, subject, req, reply, err)
	r.metrics.request(opLabel(req.Op), reply.Code)
	return reply
}

// logAnswer logs one answer: a failure as a warning, a refused request
// as info, a success at debug. The attributes are built only when the
// line is written: at the default level a success, every admission's
// case, costs nothing here.
func (r *Responder) logAnswer(ctx context.Context, subject string, req subjects.ETARequest, reply subjects.ETAReply, err error) {
	level, msg := slog.LevelDebug, "eta request answered"
	switch refusal := reply.Err(); {
	case errors.Is(refusal, subjects.ErrETAUnavailable):
		level, msg = slog.LevelWarn, "eta request failed"
	case errors.Is(refusal, subjects.ErrETABadRequest):
		level, msg = slog.LevelInfo, "eta request refused"
	}
	if !r.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("op", req.Op), slog.String("tenant", req.Tenant), slog.Int("code", reply.Code),
		slog.String("error", reply.Error)}
	switch level {
	case slog.LevelWarn:
		attrs = append(attrs, slog.Any("err", err))
	case slog.LevelInfo:
		attrs = append(attrs, slog.String("subject", subject), slog.Any("err", err))
	default:
		ticket := reply.Ticket
		if ticket == "" {
			ticket = req.Ticket
		}
		attrs = append(attrs, slog.String("ticket", ticket), slog.String("agent", reply.Agent),
			slog.Time("slot_time", reply.SlotTime))
	}
	r.log.LogAttrs(ctx, level, msg, attrs...)
}

// opLabel keeps a hostile op string out of metric labels.
func opLabel(op string) string {
	switch op {
	case subjects.ETAReserve, subjects.ETAHold, subjects.ETAConfirm, subjects.ETARelease, subjects.ETAPing,
		subjects.ETACapacity, subjects.ETAReplan, subjects.ETAAtRisk:
		return op
	}
	return "invalid"
}

// decodeRequest decodes strictly and checks every field the operation
// needs, as ids and values that are safe to put into keys.
func decodeRequest(subject string, data []byte) (subjects.ETARequest, error) {
	var req subjects.ETARequest
	if len(data) > maxRequestBytes {
		return req, &RequestError{Code: subjects.ETACodeBodyTooLarge, Reason: fmt.Sprintf("request over %d bytes", maxRequestBytes)}
	}
	tenant, err := subjects.ParseETA(subject)
	if err != nil {
		return req, &RequestError{Code: subjects.ETACodeInvalidField, Field: "subject", Reason: err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return subjects.ETARequest{}, &RequestError{Code: subjects.ETACodeUnknownField, Field: strings.Trim(f, `"`), Reason: "unknown field"}
		}
		return subjects.ETARequest{}, &RequestError{Code: subjects.ETACodeInvalidJSON, Reason: err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return subjects.ETARequest{}, &RequestError{Code: subjects.ETACodeInvalidJSON, Reason: "data after the JSON object"}
	}
	if req.Tenant != tenant {
		return req, &RequestError{Code: subjects.ETACodeTenantMismatch, Field: "tenant", Reason: "does not match the subject"}
	}
	field := func(name, reason string) error {
		return &RequestError{Code: subjects.ETACodeInvalidField, Field: name, Reason: reason}
	}
	typ := func() error {
		if _, ok := subjects.SLA(req.Type); !ok {
			return field("type", "must be GOLD, SILVER or BRONZE")
		}
		return nil
	}
	// Only the operations that read the tenant's agents wait for them.
	noAgentsRev := func() error {
		if req.AgentsRev != 0 {
			return field("agents_rev", "only reserve, hold, capacity and replan carry it")
		}
		return nil
	}
	nonce := func() error {
		if err := subjects.ValidTicketNonce(req.Nonce); err != nil {
			return field("nonce", err.Error())
		}
		return nil
	}
	noTakeover := func() error {
		if req.Takeover {
			return field("takeover", "only a reserve takes over")
		}
		return nil
	}
	// Only the operations that make a ticket carry its content.
	content := func() error {
		if err := subjects.CheckContent(req.Subject, req.Description); err != nil {
			ce, _ := errors.AsType[*subjects.ContentError](err)
			return field(ce.Field, ce.Reason)
		}
		return nil
	}
	noContent := func() error {
		switch {
		case req.Subject != "":
			return field("subject", "only a reserve or confirm carries a ticket's content")
		case req.Description != "":
			return field("description", "only a reserve or confirm carries a ticket's content")
		}
		return nil
	}
	var errs []error
	switch req.Op {
	case subjects.ETAReserve:
		errs = append(errs, typ(), nonce(), content())
		if req.Ticket != "" {
			errs = append(errs, field("ticket", "a reserve names no ticket: the responder makes its id from the nonce"))
		}
	case subjects.ETAHold:
		errs = append(errs, typ(), noTakeover(), noContent())
	case subjects.ETAConfirm:
		// A Ticket from an asker of an older version is ignored: the id
		// is made from the slot and the nonce.
		errs = append(errs, typ(), nonce(), noAgentsRev(), noTakeover(), content())
		if _, _, _, err := subjects.ParseSlotID(req.SlotID); err != nil {
			errs = append(errs, field("slot_id", err.Error()))
		}
	case subjects.ETAPing:
		errs = append(errs, noAgentsRev(), noTakeover(), noContent())
	case subjects.ETARelease:
		errs = append(errs, noAgentsRev(), noTakeover(), noContent())
		if req.Ticket == "" {
			// Release by nonce: what an asker sends after a reserve
			// that got no reply.
			errs = append(errs, nonce())
			break
		}
		// Agent and SlotTime are the ticket's current slot: the one its id
		// names, or another once the ticket has moved.
		_, _, _, err := subjects.ParseTicketID(req.Ticket)
		switch {
		case err != nil:
			errs = append(errs, field("ticket", err.Error()))
		case subjects.ValidID(req.Agent) != nil:
			errs = append(errs, field("agent", "must be the ticket's agent id"))
		case req.SlotTime.IsZero() || !req.SlotTime.Equal(req.SlotTime.Truncate(time.Minute)):
			errs = append(errs, field("slot_time", "must be the ticket's whole-minute slot"))
		}
		errs = append(errs, typ())
		if req.CreatedAt.IsZero() {
			errs = append(errs, field("created_at", "the ticket's instant is required"))
		}
	case subjects.ETACapacity:
		errs = append(errs, noTakeover(), noContent())
	case subjects.ETAReplan:
		errs = append(errs, noTakeover(), noContent())
	case subjects.ETAAtRisk:
		errs = append(errs, noAgentsRev(), noTakeover(), noContent())
	default:
		errs = append(errs, field("op", "must be reserve, hold, confirm, release, capacity, replan, at_risk or ping"))
	}
	for _, err := range errs {
		if err != nil {
			return req, err
		}
	}
	return req, nil
}

// deadlineKey carries a request's Deadline to its writes (write checks
// it just before each one).
type deadlineKey struct{}

// replyOf maps an error onto the reply; the responder is the only place
// that does. The reply's code comes from the subjects contract, and so
// does the HTTP status beside it.
func replyOf(err error) subjects.ETAReply {
	var re *RequestError
	switch {
	case errors.As(err, &re):
		return subjects.ETARefusal(re.Code, re.Field, re.Error())
	case errors.Is(err, tenants.ErrTenantNotFound):
		return subjects.ETARefusal(subjects.ETACodeTenantNotFound, "", "no such client")
	case errors.Is(err, ErrNoSlot):
		return subjects.ETARefusal(subjects.ETACodeNoSlot, "", err.Error())
	case errors.Is(err, ErrTypeMismatch):
		return subjects.ETARefusal(subjects.ETACodeTypeMismatch, "", err.Error())
	case errors.Is(err, ErrHoldGone):
		return subjects.ETARefusal(subjects.ETACodeHoldGone, "", err.Error())
	case errors.Is(err, ErrNonceReleased):
		return subjects.ETARefusal(subjects.ETACodeNonceReleased, "", err.Error())
	}
	return subjects.ETARefusal(subjects.ETACodeUnavailable, "", err.Error())
}

func (r *Responder) serve(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	if req.Op == subjects.ETAPing {
		return subjects.ETAReply{Code: subjects.ETAOK}, nil
	}
	now := r.now()
	if !req.Deadline.IsZero() {
		// The asker gives up at its deadline: past it, nothing is written.
		if !now.Before(req.Deadline) {
			return subjects.ETAReply{}, fmt.Errorf("%s for tenant %s, due by %s: %w: %w", req.Op, req.Tenant,
				req.Deadline.Format(time.RFC3339Nano), ErrUnavailable, ErrPastDeadline)
		}
		ctx = context.WithValue(ctx, deadlineKey{}, req.Deadline)
	}
	switch req.Op {
	case subjects.ETAReserve, subjects.ETAHold, subjects.ETACapacity:
		if d := req.CreatedAt.Sub(now); req.CreatedAt.IsZero() || d > maxSkew || d < -maxSkew {
			return subjects.ETAReply{}, &RequestError{Code: subjects.ETACodeInvalidField, Field: "created_at",
				Reason: fmt.Sprintf("must be within %s of the responder's clock", maxSkew)}
		}
	}
	if req.Op != subjects.ETARelease {
		// A release needs no tenant lookup: a key that is not there is
		// nothing to release.
		if _, err := r.registry.Get(ctx, req.Tenant); err != nil {
			if errors.Is(err, tenants.ErrTenantNotFound) {
				return subjects.ETAReply{}, err
			}
			return subjects.ETAReply{}, fmt.Errorf("looking up tenant %s: %w: %w", req.Tenant, ErrUnavailable, err)
		}
	}
	switch req.Op {
	case subjects.ETAReserve, subjects.ETAHold, subjects.ETACapacity, subjects.ETAReplan:
		// Read-your-writes: the calendar must have the tenant's last
		// agent change before it proposes a slot.
		if err := r.awaitAgents(ctx, req); err != nil {
			return subjects.ETAReply{}, err
		}
	}
	switch req.Op {
	case subjects.ETAReserve:
		return r.reserve(ctx, req, now)
	case subjects.ETAHold:
		return r.hold(ctx, req, now)
	case subjects.ETAConfirm:
		return r.confirm(ctx, req, now)
	case subjects.ETACapacity:
		return r.capacity(req, now), nil
	case subjects.ETAReplan:
		return r.replan(ctx, req, now)
	case subjects.ETAAtRisk:
		return r.atRisk(ctx, req, now)
	default:
		return r.release(ctx, req, now)
	}
}

// reserve admits a new ticket: its confirmed record, written into the
// earliest free slot, is the reservation and the ticket's hand-off to the
// allocators at once. A takeover answers the tenant's ticket with the
// request's nonce, if there is one, without writing.
func (r *Responder) reserve(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	if req.Takeover {
		found, err := r.findTicket(ctx, req.Tenant, req.Nonce)
		if err != nil {
			return subjects.ETAReply{}, err
		}
		if found.ok && found.rec.State == subjects.SlotReleased && found.rec.Abandoned {
			// Released by the asker that never learnt its outcome (a
			// release of the nonce): no client was told of it, and a new
			// ticket must not repeat its id. A ticket a client cancelled
			// is still the answer (the 201 it earned).
			return subjects.ETAReply{}, fmt.Errorf("takeover of nonce %s: ticket %s: %w", req.Nonce, found.rec.Ticket, ErrNonceReleased)
		}
		if found.ok {
			return subjects.ETAReply{Code: subjects.ETACreated, Ticket: found.rec.Ticket, Agent: found.rec.Agent,
				SlotTime: found.rec.SlotTime, CreatedAt: found.rec.CreatedAt, Revision: found.rev}, nil
		}
	}
	sla, _ := subjects.SLA(req.Type) // checked by decodeRequest
	var ticket subjects.TicketEvent
	slot, rev, moves, err := r.take(ctx, req, now, calendar.Mark{State: calendar.Busy},
		func(s calendar.Slot, prev uint64) (subjects.SlotRecord, error) {
			id, err := subjects.NewSlotTicketID(s.Agent, s.Minute, req.Nonce)
			if err != nil {
				// An agent id too long for a ticket id: tms makes none.
				return subjects.SlotRecord{}, fmt.Errorf("ticket id for agent %s: %w: %w", s.Agent, ErrUnavailable, err)
			}
			ticket = subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: req.Tenant,
				Ticket: id, Type: req.Type, Agent: s.Agent, SlotTime: s.Minute, CreatedAt: req.CreatedAt,
				Deadline: req.CreatedAt.Add(sla), Subject: req.Subject, Description: req.Description}
			return subjects.ConfirmedRecord(ticket, prev), nil
		})
	if err != nil {
		return subjects.ETAReply{}, err
	}
	// Written: the ticket exists, whoever asked and however (a takeover
	// answered above wrote nothing and sends nothing again).
	publishEvent(r.nc, r.log, req.Tenant, subjects.EventAccepted, ticket.Ticket, acceptedEvent(ticket))
	return subjects.ETAReply{Code: subjects.ETACreated, Ticket: ticket.Ticket, Agent: slot.Agent, SlotTime: slot.Minute,
		CreatedAt: req.CreatedAt, Revision: rev, Moves: moves}, nil
}

// hold takes the earliest free slot as a pending hold: busy until
// HoldTTL has passed, then free again in every calendar without a write.
func (r *Responder) hold(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	nonce := subjects.NewHoldNonce()
	expires := now.Add(r.holdTTL).UTC()
	slot, rev, _, err := r.take(ctx, req, now, calendar.Mark{State: calendar.Held, Until: expires},
		func(s calendar.Slot, prev uint64) (subjects.SlotRecord, error) {
			return subjects.SlotRecord{State: subjects.SlotHeld, Tenant: req.Tenant, Agent: s.Agent, SlotTime: s.Minute,
				Prev: prev, Type: req.Type, CreatedAt: req.CreatedAt, Nonce: nonce, HoldExpiresAt: &expires}, nil
		})
	if err != nil {
		return subjects.ETAReply{}, err
	}
	return subjects.ETAReply{Code: subjects.ETAOK, Agent: slot.Agent, SlotTime: slot.Minute,
		SlotID: subjects.FormatSlotID(slot.Agent, slot.Minute, nonce), HoldExpiresAt: &expires, Revision: rev}, nil
}

// take places the request's new record (build's) in the tenant's
// calendar: the earliest free slot in its window, or, when there is none,
// a slot freed by moving accepted tickets to other agent-minutes inside
// their own windows (the fewest moves, calendar.Place). A placement
// without moves is one revision-checked write (a create where the key was
// never written, an update against the newest revision where it was); one
// with moves is one atomic batch of every moved ticket's record and the
// new one (writePlacement). A lost race marks what it learnt and places
// again; the winner is recorded in the calendar at once as mark
// (read-your-writes: the watch echoes it later). It returns the slot, the
// new record's revision and the number of tickets moved.
func (r *Responder) take(ctx context.Context, req subjects.ETARequest, now time.Time, mark calendar.Mark,
	build func(s calendar.Slot, prev uint64) (subjects.SlotRecord, error)) (calendar.Slot, uint64, int, error) {
	first, last, _ := calendar.Window(req.CreatedAt, req.Type)
	if mark.State == calendar.Busy {
		mark.Last = last // a ticket may move inside its window
	}
	tc := r.calendar(req.Tenant)
	kv := r.shardKV(req.Tenant)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		tc.mu.Lock()
		p, ok := tc.cal.Place(now, first, last)
		tc.mu.Unlock()
		if !ok {
			return calendar.Slot{}, 0, 0, ErrNoSlot
		}
		if p.Moves() > 0 {
			head := func(rec0 subjects.SlotRecord, to calendar.Slot) (subjects.SlotRecord, calendar.Mark, error) {
				rec, err := build(p.Claims[0].Slot, p.Claims[0].Rev)
				rec.Moved = &subjects.SlotMove{Ticket: rec0.Ticket, Agent: to.Agent, SlotTime: to.Minute.UTC()}
				return rec, mark, err
			}
			revs, err := r.writePlacement(ctx, req.Tenant, tc, p, head)
			switch {
			case err == nil:
				r.metrics.moved(moveAdmission, p.Moves())
				return p.Claims[0].Slot, revs[0], p.Moves(), nil
			case errors.Is(err, errPlacementStale):
				r.metrics.conflict()
				continue
			}
			return calendar.Slot{}, 0, 0, err
		}
		cl := p.Claims[0]
		key := subjects.SlotKey(req.Tenant, cl.Agent, cl.Minute)
		rec, err := build(cl.Slot, cl.Rev)
		var value []byte
		if err == nil {
			value, err = json.Marshal(rec)
		}
		if err != nil {
			tc.mu.Lock()
			tc.cal.Abandon(cl)
			tc.mu.Unlock()
			return calendar.Slot{}, 0, 0, err
		}
		rev, err := r.write(ctx, kv, key, value, cl.Rev)
		tc.mu.Lock()
		switch {
		case err == nil:
			tc.cal.Taken(cl, rev, mark)
		case jskit.CreateLost(err):
			tc.cal.Lost(cl)
		default:
			tc.cal.Abandon(cl)
		}
		tc.mu.Unlock()
		switch {
		case err == nil:
			r.metrics.moved(moveAdmission, 0)
			return cl.Slot, rev, 0, nil
		case jskit.CreateLost(err):
			r.metrics.conflict()
			if cl.Rev == 0 {
				r.relearn(ctx, kv, req.Tenant, cl.Slot, key)
			}
			continue
		}
		return calendar.Slot{}, 0, 0, fmt.Errorf("writing slot %s: %w: %w", key, ErrUnavailable, err)
	}
	return calendar.Slot{}, 0, 0, fmt.Errorf("tenant %s after %d attempts: %w: %w", req.Tenant, maxAttempts, ErrUnavailable, ErrContended)
}

// relearn reads the newest record of a key whose create was lost and
// puts it into the tenant's calendar. Usually the watch brings the same
// record a moment later; but a calendar can also have missed the key (it
// was outside the minutes the calendar indexed when written), and then
// only this read tells it the revision to update, should the record free
// the minute. A failed read leaves the slot busy, as Lost marked it.
func (r *Responder) relearn(ctx context.Context, kv jetstream.KeyValue, tenant string, s calendar.Slot, key string) {
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	e, err := kv.Get(kctx, key)
	cancel()
	if err != nil {
		return
	}
	r.learn(tenant, s, e.Revision(), slotMark(e))
}

// write puts a slot record: only if the key was never written (prev 0),
// else only if its newest record is still at revision prev. A lost race
// is jskit.CreateLost.
func (r *Responder) write(ctx context.Context, kv jetstream.KeyValue, key string, value []byte, prev uint64) (uint64, error) {
	if dl, ok := ctx.Value(deadlineKey{}).(time.Time); ok && !r.now().Before(dl) {
		return 0, fmt.Errorf("writing slot %s: %w", key, ErrPastDeadline)
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if prev == 0 {
		return kv.Create(kctx, key, value)
	}
	return kv.Update(kctx, key, value, prev)
}

// confirm turns a live hold into a ticket: the confirmed record replaces
// the hold, checked against its revision, so a hold that expired and was
// taken by another reservation, or was confirmed already, is not
// overwritten.
func (r *Responder) confirm(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	agent, minute, holdNonce, _ := subjects.ParseSlotID(req.SlotID) // checked by decodeRequest
	id, err := subjects.NewSlotTicketID(agent, minute, req.Nonce)
	if err != nil {
		return subjects.ETAReply{}, ErrHoldGone // no hold of tms names such an agent
	}
	key := subjects.SlotKey(req.Tenant, agent, minute)
	kv := r.shardKV(req.Tenant)
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	e, err := kv.Get(kctx, key)
	cancel()
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return subjects.ETAReply{}, ErrHoldGone
	}
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("reading slot %s: %w: %w", key, ErrUnavailable, err)
	}
	rec, err := subjects.DecodeSlotRecord(key, e.Value(), subjects.CheckNames)
	if err != nil {
		return subjects.ETAReply{}, ErrHoldGone
	}
	if rec.State == subjects.SlotConfirmed && rec.Ticket == id {
		// A repeated confirm of the same ticket: the same answer.
		return subjects.ETAReply{Code: subjects.ETAOK, Ticket: id, Agent: agent, SlotTime: minute,
			CreatedAt: rec.CreatedAt, Revision: e.Revision()}, nil
	}
	if rec.State != subjects.SlotHeld || rec.Nonce != holdNonce || !rec.Busy(now) {
		return subjects.ETAReply{}, ErrHoldGone
	}
	first, last, ok := calendar.Window(rec.CreatedAt, req.Type)
	if !ok || minute.Before(first) || minute.After(last) {
		return subjects.ETAReply{}, fmt.Errorf("slot %s for %s: %w", minute.Format(time.RFC3339), req.Type, ErrTypeMismatch)
	}
	sla, _ := subjects.SLA(req.Type)
	ticket := subjects.TicketEvent{Event: subjects.TicketCreated,
		Tenant: req.Tenant, Ticket: id, Type: req.Type, Agent: agent, SlotTime: minute, CreatedAt: rec.CreatedAt,
		Deadline: rec.CreatedAt.Add(sla), Subject: req.Subject, Description: req.Description}
	value, err := json.Marshal(subjects.ConfirmedRecord(ticket, e.Revision()))
	if err != nil {
		return subjects.ETAReply{}, err
	}
	rev, err := r.write(ctx, kv, key, value, e.Revision())
	if jskit.CreateLost(err) {
		return subjects.ETAReply{}, ErrHoldGone // expired and taken, or confirmed, since the read
	}
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("confirming slot %s: %w: %w", key, ErrUnavailable, err)
	}
	r.learn(req.Tenant, calendar.Slot{Agent: agent, Minute: minute}, rev, calendar.Mark{State: calendar.Busy, Last: last})
	// The hold became a ticket (a repeated confirm answered above sends
	// nothing again).
	publishEvent(r.nc, r.log, req.Tenant, subjects.EventAccepted, id, acceptedEvent(ticket))
	return subjects.ETAReply{Code: subjects.ETAOK, Ticket: id, Agent: agent, SlotTime: minute, CreatedAt: rec.CreatedAt,
		Revision: rev}, nil
}

// learn records this process's own write in the tenant's calendar at
// once (read-your-writes); the watch's echo of it changes nothing.
func (r *Responder) learn(tenant string, s calendar.Slot, rev uint64, mark calendar.Mark) {
	tc := r.calendar(tenant)
	tc.mu.Lock()
	tc.cal.Set(s, rev, mark)
	tc.mu.Unlock()
}

// release cancels a ticket and frees its slot, or, given only a nonce,
// the tenant's ticket with that nonce if there is one.
func (r *Responder) release(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	if req.Ticket != "" {
		sla, _ := subjects.SLA(req.Type) // checked by decodeRequest
		ev := subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: req.Tenant, Ticket: req.Ticket, Type: req.Type,
			Agent: req.Agent, SlotTime: req.SlotTime.UTC(), CreatedAt: req.CreatedAt, Deadline: req.CreatedAt.Add(sla)}
		return r.releaseTicket(ctx, ev, now, false)
	}
	found, err := r.findTicket(ctx, req.Tenant, req.Nonce)
	if err != nil {
		return subjects.ETAReply{}, err
	}
	if !found.ok {
		return subjects.ETAReply{Code: subjects.ETAOK}, nil // the reserve wrote nothing
	}
	ev := found.rec.Event()
	ev.Event, ev.CancelledAt = subjects.TicketCreated, nil
	return r.releaseTicket(ctx, ev, now, true)
}

// releaseTicket writes the released record of ev's ticket (a created
// event) over its newest record, if that is the ticket's confirmed one.
// The ticket is looked up from the key of ev's slot, following its moves
// (tenants.TicketRecord, as GET reads it): the asker may name the slot
// its id names, or one the ticket held since. A slot with no record at
// all (aged out; the asker found the ticket in its tenant database) gets
// the released record as its first, so that the allocators cancel the
// row, but only the slot the id names: another is refused. Anything else
// (already released, its minute taken since) means the ticket was
// released before: nothing to do. Repeating it changes nothing.
func (r *Responder) releaseTicket(ctx context.Context, ev subjects.TicketEvent, now time.Time, abandoned bool) (subjects.ETAReply, error) {
	if err := ev.Check(ev.Tenant, ev.Ticket); err != nil {
		return subjects.ETAReply{}, &RequestError{Code: subjects.ETACodeInvalidField, Field: "created_at", Reason: err.Error()}
	}
	kv := r.shardKV(ev.Tenant)
	done := subjects.ETAReply{Code: subjects.ETAOK, Ticket: ev.Ticket, Agent: ev.Agent, SlotTime: ev.SlotTime}
	idAgent, idMinute, _, _ := subjects.ParseTicketID(ev.Ticket) // checked by decodeRequest
	named := ev.Agent == idAgent && ev.SlotTime.Equal(idMinute)
	var stale uint64 // a revision whose update was refused: not the newest
	for attempt := 0; attempt < 3; attempt++ {
		key := subjects.SlotKey(ev.Tenant, ev.Agent, ev.SlotTime)
		at, err := tenants.TicketRecord(ctx, kv, key, ev.Ticket, subjects.CheckNames, kvTimeout)
		switch {
		case errors.Is(err, tenants.ErrInvalidTicket):
			return done, nil // records no writer of tms made: nothing to release
		case err != nil:
			return subjects.ETAReply{}, fmt.Errorf("reading slot %s: %w: %w", key, ErrUnavailable, err)
		case !at.Found && !named:
			// A slot other than the one the id names is the ticket's only
			// if a move took it there.
			return subjects.ETAReply{}, &RequestError{Code: subjects.ETACodeInvalidField, Field: "slot_time",
				Reason: "the ticket holds no such slot: want the slot its id names or the one it moved to"}
		case at.Found && (at.Record.State != subjects.SlotConfirmed || at.Revision == stale):
			return done, nil
		}
		var prev uint64
		moves := 0
		if at.Found {
			ev = at.Record.Event() // the stored ticket, where it is now, is the one cancelled
			key, prev, moves = at.Key, at.Revision, at.Record.Moves
			done.Agent, done.SlotTime = ev.Agent, ev.SlotTime
		}
		rec := subjects.ReleasedRecord(ev, now, prev)
		rec.Abandoned, rec.Moves = abandoned, moves
		value, err := json.Marshal(rec)
		if err != nil {
			return subjects.ETAReply{}, err
		}
		rev, err := r.write(ctx, kv, key, value, prev)
		if err == nil {
			r.learn(ev.Tenant, calendar.Slot{Agent: ev.Agent, Minute: ev.SlotTime}, rev, calendar.Mark{State: calendar.Free})
			done.Revision = rev
			return done, nil
		}
		if !jskit.CreateLost(err) {
			return subjects.ETAReply{}, fmt.Errorf("releasing slot %s: %w: %w", key, ErrUnavailable, err)
		}
		if !at.Found {
			return done, nil // the key has records, none of them the ticket's: released long ago
		}
		// Changed since the read: look again; the same revision found
		// again is not the key's newest (the ticket was replaced there).
		stale = prev
	}
	return subjects.ETAReply{}, fmt.Errorf("releasing slot %s/%s: %w: %w", ev.Agent, ev.SlotTime.Format(time.RFC3339),
		ErrUnavailable, ErrContended)
}

// foundTicket is a ticket's newest record found by findTicket.
type foundTicket struct {
	rec subjects.SlotRecord
	rev uint64
	ok  bool
}

// findTicket searches the tenant's slot records, every key's whole
// history, for a ticket whose id has nonce, and returns its newest
// record. It reads the shard's stream for the tenant's keys up to the
// watch's end-of-snapshot marker, within searchTimeout: a rare path (a
// takeover, a release after a reserve that got no reply), kept simple.
func (r *Responder) findTicket(ctx context.Context, tenant, nonce string) (foundTicket, error) {
	sctx, cancel := context.WithTimeout(ctx, searchTimeout)
	defer cancel()
	kv := r.shardKV(tenant)
	w, err := kv.WatchFiltered(sctx, []string{subjects.TenantSlots(tenant)}, jetstream.IncludeHistory(),
		jetstream.IgnoreDeletes())
	if err != nil {
		return foundTicket{}, fmt.Errorf("searching the slots of tenant %s: %w: %w", tenant, ErrUnavailable, err)
	}
	defer jskit.StopWatcher(w)
	var found foundTicket
	for {
		select {
		case e, open := <-w.Updates():
			if !open {
				return foundTicket{}, fmt.Errorf("searching the slots of tenant %s: %w: the watch ended", tenant, ErrUnavailable)
			}
			if e == nil {
				return found, nil
			}
			rec, err := subjects.DecodeSlotRecord(e.Key(), e.Value(), subjects.CheckNames)
			if err != nil || !rec.HasTicket() {
				continue
			}
			if _, _, n, err := subjects.ParseTicketID(rec.Ticket); err == nil && n == nonce && e.Revision() > found.rev {
				found = foundTicket{rec: rec, rev: e.Revision(), ok: true}
			}
		case <-sctx.Done():
			return foundTicket{}, fmt.Errorf("searching the slots of tenant %s: %w: %w", tenant, ErrUnavailable, sctx.Err())
		}
	}
}
