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

	"github.com/nats-io/nats.go"
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
		attrs = append(attrs, slog.String("ticket", req.Ticket), slog.String("agent", reply.Agent),
			slog.Time("slot_time", reply.SlotTime))
	}
	r.log.LogAttrs(ctx, level, msg, attrs...)
}

// opLabel keeps a hostile op string out of metric labels.
func opLabel(op string) string {
	switch op {
	case subjects.ETAReserve, subjects.ETAHold, subjects.ETAConfirm, subjects.ETARelease, subjects.ETAPing:
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
	id := func(name, v string) error {
		if err := subjects.ValidID(v); err != nil {
			return field(name, err.Error())
		}
		return nil
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
			return field("agents_rev", "only reserve and hold carry it")
		}
		return nil
	}
	var errs []error
	switch req.Op {
	case subjects.ETAReserve:
		errs = append(errs, typ(), id("ticket", req.Ticket))
	case subjects.ETAHold:
		errs = append(errs, typ())
	case subjects.ETAConfirm:
		errs = append(errs, typ(), id("ticket", req.Ticket), noAgentsRev())
		if _, _, _, err := subjects.ParseSlotID(req.SlotID); err != nil {
			errs = append(errs, field("slot_id", err.Error()))
		}
	case subjects.ETAPing:
		errs = append(errs, noAgentsRev())
	case subjects.ETARelease:
		errs = append(errs, id("ticket", req.Ticket), id("agent", req.Agent), noAgentsRev())
		if req.SlotTime.IsZero() || !req.SlotTime.Equal(req.SlotTime.Truncate(time.Minute)) {
			errs = append(errs, field("slot_time", "must be a whole minute"))
		}
	default:
		errs = append(errs, field("op", "must be reserve, hold, confirm, release or ping"))
	}
	for _, err := range errs {
		if err != nil {
			return req, err
		}
	}
	return req, nil
}

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
	}
	return subjects.ETARefusal(subjects.ETACodeUnavailable, "", err.Error())
}

func (r *Responder) serve(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	if req.Op == subjects.ETAPing {
		return subjects.ETAReply{Code: subjects.ETAOK}, nil
	}
	now := r.now()
	switch req.Op {
	case subjects.ETAReserve, subjects.ETAHold:
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
	case subjects.ETAReserve, subjects.ETAHold:
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
	default:
		return r.release(ctx, req)
	}
}

// reserve takes the earliest free slot for a new ticket, confirmed at once.
func (r *Responder) reserve(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	value, err := json.Marshal(subjects.SlotRecord{State: subjects.SlotConfirmed, Ticket: req.Ticket, Type: req.Type,
		CreatedAt: req.CreatedAt})
	if err != nil {
		return subjects.ETAReply{}, err
	}
	slot, rev, err := r.take(ctx, req, value, func(minute time.Time) time.Duration { return r.confirmedTTL(minute, now) })
	if err != nil {
		return subjects.ETAReply{}, err
	}
	return subjects.ETAReply{Code: subjects.ETACreated, Agent: slot.Agent, SlotTime: slot.Minute, Revision: rev}, nil
}

// hold takes the earliest free slot as a pending hold that expires after
// HoldTTL unless confirmed.
func (r *Responder) hold(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	nonce := subjects.NewHoldNonce()
	expires := now.Add(r.holdTTL).UTC()
	value, err := json.Marshal(subjects.SlotRecord{State: subjects.SlotHeld, Type: req.Type, CreatedAt: req.CreatedAt,
		Nonce: nonce, HoldExpiresAt: &expires})
	if err != nil {
		return subjects.ETAReply{}, err
	}
	slot, rev, err := r.take(ctx, req, value, func(time.Time) time.Duration { return r.holdTTL })
	if err != nil {
		return subjects.ETAReply{}, err
	}
	return subjects.ETAReply{Code: subjects.ETAOK, Agent: slot.Agent, SlotTime: slot.Minute,
		SlotID: subjects.FormatSlotID(slot.Agent, slot.Minute, nonce), HoldExpiresAt: &expires, Revision: rev}, nil
}

// take claims candidates from the tenant's calendar, earliest first, and
// creates each one's key only if absent until one create wins. A lost
// create marks the slot taken and moves on; the winner is recorded in the
// calendar at once (read-your-writes: the watch echoes it later).
func (r *Responder) take(ctx context.Context, req subjects.ETARequest, value []byte,
	ttl func(minute time.Time) time.Duration) (calendar.Slot, uint64, error) {
	first, last, _ := calendar.Window(req.CreatedAt, req.Type)
	tc := r.calendar(req.Tenant)
	kv := r.shardKV(req.Tenant)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		tc.mu.Lock()
		cl, ok := tc.cal.Claim(first, last)
		tc.mu.Unlock()
		if !ok {
			return calendar.Slot{}, 0, ErrNoSlot
		}
		key := subjects.SlotKey(req.Tenant, cl.Agent, cl.Minute)
		kctx, cancel := context.WithTimeout(ctx, kvTimeout)
		rev, err := kv.Create(kctx, key, value, jetstream.KeyTTL(wholeSeconds(ttl(cl.Minute))))
		cancel()
		tc.mu.Lock()
		switch {
		case err == nil:
			tc.cal.Taken(cl, rev)
		case jskit.CreateLost(err):
			tc.cal.Lost(cl)
		default:
			tc.cal.Abandon(cl)
		}
		tc.mu.Unlock()
		switch {
		case err == nil:
			return cl.Slot, rev, nil
		case jskit.CreateLost(err):
			r.metrics.conflict()
			continue
		}
		return calendar.Slot{}, 0, fmt.Errorf("creating slot %s: %w: %w", key, ErrUnavailable, err)
	}
	return calendar.Slot{}, 0, fmt.Errorf("tenant %s after %d attempts: %w: %w", req.Tenant, maxAttempts, ErrUnavailable, ErrContended)
}

// confirm turns a live hold into a reservation. The write is checked
// against the hold's revision and carries the reservation's own TTL, so
// the short hold TTL is gone and the key outlives its minute.
func (r *Responder) confirm(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	agent, minute, nonce, _ := subjects.ParseSlotID(req.SlotID) // checked by decodeRequest
	key := subjects.SlotKey(req.Tenant, agent, minute)
	kv := r.shardKV(req.Tenant)
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	e, err := kv.Get(kctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return subjects.ETAReply{}, ErrHoldGone
	}
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("reading slot %s: %w: %w", key, ErrUnavailable, err)
	}
	var rec subjects.SlotRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Nonce != nonce {
		return subjects.ETAReply{}, ErrHoldGone
	}
	done := subjects.ETAReply{Code: subjects.ETAOK, Agent: agent, SlotTime: minute, CreatedAt: rec.CreatedAt,
		Revision: e.Revision()}
	switch {
	case rec.State == subjects.SlotConfirmed && rec.Ticket == req.Ticket:
		return done, nil // a repeated confirm of the same ticket: the same answer
	case rec.State != subjects.SlotHeld || rec.HoldExpiresAt == nil || !now.Before(*rec.HoldExpiresAt):
		return subjects.ETAReply{}, ErrHoldGone
	}
	if first, last, ok := calendar.Window(rec.CreatedAt, req.Type); !ok || minute.Before(first) || minute.After(last) {
		return subjects.ETAReply{}, fmt.Errorf("slot %s for %s: %w", minute.Format(time.RFC3339), req.Type, ErrTypeMismatch)
	}
	rec.State, rec.Ticket, rec.Type, rec.HoldExpiresAt = subjects.SlotConfirmed, req.Ticket, req.Type, nil
	msg := nats.NewMsg(subjects.SlotSubject(req.Tenant, agent, minute, r.nShards))
	if msg.Data, err = json.Marshal(rec); err != nil {
		return subjects.ETAReply{}, err
	}
	ack, err := r.js.PublishMsg(kctx, msg, jetstream.WithExpectLastSequencePerSubject(e.Revision()),
		jetstream.WithMsgTTL(wholeSeconds(r.confirmedTTL(minute, now))))
	if jskit.WrongLastSequence(err) {
		return subjects.ETAReply{}, ErrHoldGone // expired, confirmed or replaced since the read
	}
	if err != nil {
		return subjects.ETAReply{}, fmt.Errorf("confirming slot %s: %w: %w", key, ErrUnavailable, err)
	}
	tc := r.calendar(req.Tenant)
	tc.mu.Lock()
	tc.cal.Put(calendar.Slot{Agent: agent, Minute: minute}, ack.Sequence)
	tc.mu.Unlock()
	done.Revision = ack.Sequence
	return done, nil
}

// release frees a reservation if it still belongs to the ticket; anything
// else (absent, a hold, another ticket's) is nothing to release. The purge
// is checked against the revision read, and its marker expires.
func (r *Responder) release(ctx context.Context, req subjects.ETARequest) (subjects.ETAReply, error) {
	minute := req.SlotTime.UTC()
	key := subjects.SlotKey(req.Tenant, req.Agent, minute)
	kv := r.shardKV(req.Tenant)
	ok := subjects.ETAReply{Code: subjects.ETAOK, Agent: req.Agent, SlotTime: minute}
	for attempt := 0; attempt < 3; attempt++ {
		kctx, cancel := context.WithTimeout(ctx, kvTimeout)
		e, err := kv.Get(kctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			cancel()
			return ok, nil
		}
		if err != nil {
			cancel()
			return subjects.ETAReply{}, fmt.Errorf("reading slot %s: %w: %w", key, ErrUnavailable, err)
		}
		var rec subjects.SlotRecord
		if json.Unmarshal(e.Value(), &rec) != nil || rec.State != subjects.SlotConfirmed || rec.Ticket != req.Ticket {
			cancel()
			return ok, nil
		}
		err = kv.Purge(kctx, key, jetstream.LastRevision(e.Revision()))
		cancel()
		if err == nil {
			tc := r.calendar(req.Tenant)
			tc.mu.Lock()
			tc.cal.Released(calendar.Slot{Agent: req.Agent, Minute: minute}, e.Revision())
			tc.mu.Unlock()
			ok.Revision = e.Revision()
			return ok, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !jskit.WrongLastSequence(err) {
			return subjects.ETAReply{}, fmt.Errorf("releasing slot %s: %w: %w", key, ErrUnavailable, err)
		}
		// Changed since the read: look again.
	}
	return subjects.ETAReply{}, fmt.Errorf("releasing slot %s: %w: %w", key, ErrUnavailable, ErrContended)
}

// confirmedTTL keeps a reservation until its minute has passed plus a
// margin.
func (r *Responder) confirmedTTL(minute, now time.Time) time.Duration {
	return minute.Add(time.Minute + reservationMargin).Sub(now)
}

// wholeSeconds rounds a TTL up to whole seconds, at least one (the
// server's unit and minimum).
func wholeSeconds(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	if rem := d % time.Second; rem != 0 {
		d += time.Second - rem
	}
	return d
}
