package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Idempotency-Key (docs/api.md): the same key from the same tenant within 24 h
// returns the first ticket again (at its current slot: it may have moved
// since) and creates nothing new; a rejection is not
// remembered; the same key with another body is ErrIdempotencyReused; a
// twin still in flight is waited for, or answered ErrIdempotencyInUse.
//
// A key is claimed with a KV Create of a pending record that fixes the
// nonce of the ticket's id (subjects.NewTicketNonce; the slot, and so the
// whole id, is known only once the responders have reserved it). After an
// admission the record is replaced, revision-checked, by the done record
// holding the 201; after a rejection it is purged. After an outage whose
// outcome is unknown (the reserve got no reply, see admit) the request
// asks the responders to release the nonce's ticket and purges the record
// once they answer; if they do not, the record stays pending, for a
// takeover to settle. The request that claimed a key gives up on it
// within claimBudget (its own deadline).
//
// A process that dies between the claim and the done record leaves the
// pending record behind, and perhaps the ticket it was admitting. Once
// the record is older than the takeover bound
// (subjects.Budget.IdempotencyTakeover: the claim budget, one more ETA
// timeout for the release a failing twin still sends, and a margin for
// delivery and clock skew), its twin is presumed dead: a retry takes the
// record over with a revision-checked write (so one retry wins), then
// asks the responders to reserve with Takeover and the record's nonce.
// They search the tenant's slot records for a ticket of that nonce and
// answer it if the twin's reserve wrote one, or else admit a ticket anew
// under the same nonce. A ticket of the nonce that was released since can
// only have been released by the twin's own release after an unknown
// outcome (nobody else knew its id): the responders answer
// nonce_released, and the claim takes a fresh nonce (revision-checked)
// before it admits, so the new ticket's id cannot repeat the released
// one's. Either way the key gives one ticket, whose answer is then
// remembered. A takeover whose reserve gets no reply releases
// nothing (the nonce's ticket may be the twin's, its 201 perhaps already
// sent): the record stays pending for the next retry to take over. The
// pending record lives as long as a done one, so it cannot expire before
// a retry finds it and make a second ticket.
//
// A pending record of the version before nonces fixed a whole ticket id
// instead: a takeover answers that ticket if its tenant database has it,
// and otherwise admits anew under a fresh nonce.
const (
	// IdempotencyTTL is how long a key's record lives, pending or done.
	IdempotencyTTL = 24 * time.Hour
	idemDoneTTL    = IdempotencyTTL
	idemPendingTTL = IdempotencyTTL
	// idemMarkerTTL is how long the purge marker of a forgotten attempt
	// stays (the bucket's LimitMarkerTTL): markers do not pile up.
	idemMarkerTTL = time.Minute
	// idemClaimAttempts bounds how often a request tries to claim a key
	// that a twin holds and then gives up.
	idemClaimAttempts = 3
)

func hexSHA256(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		// A separator that cannot occur in the parts keeps ("ab","c")
		// apart from ("a","bc").
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RequestHash fingerprints the canonical fields of a create_ticket
// request (its client_id, the tenant, and its ticket_type), whatever their
// spacing or order in the body: a record's BodyHash.
//
// A request with content adds its subject and description, so that the
// same key with other text is a conflict; one without content keeps the
// fingerprint of the versions before content, so a key used before an
// upgrade still matches its retry after it. The parts hold no NUL (a
// ticket type is one of three, content refuses control characters), so
// the two forms never collide.
func RequestHash(tenant, ticketType string, c Content) string {
	if c == (Content{}) {
		return hexSHA256(subjects.OpCreateTicket, tenant, ticketType)
	}
	return hexSHA256(subjects.OpCreateTicket, tenant, ticketType, c.Subject, c.Description)
}

// ClaimKey is the idempotency bucket's key for a tenant's Idempotency-Key
// (the key itself hashed: any printable ASCII, up to 128 characters).
func ClaimKey(tenant, idempotencyKey string) string {
	return subjects.IdempotencyKey(tenant, hexSHA256(idempotencyKey))
}

// encodeAccepted is a done record's Response for a: create_ticket's 201
// body (subjects.AcceptedAnswer). Records written before admission was a
// package of its own hold the same JSON, so they still replay.
func encodeAccepted(a Accepted) ([]byte, error) {
	return json.Marshal(subjects.NewAcceptedAnswer(a.TicketID, a.Type, a.Agent, a.SlotTime, a.Deadline, a.CreatedAt))
}

// decodeAccepted reads a done record's Response.
func decodeAccepted(data []byte) (Accepted, error) {
	var r subjects.AcceptedAnswer
	if err := json.Unmarshal(data, &r); err != nil {
		return Accepted{}, err
	}
	a := Accepted{TicketID: r.TicketID, Type: r.TicketType, Agent: r.AgentID}
	for _, f := range []struct {
		name, value string
		into        *time.Time
	}{{"slot_time", r.SlotTime, &a.SlotTime}, {"deadline", r.Deadline, &a.Deadline}, {"created_at", r.CreatedAt, &a.CreatedAt}} {
		t, err := time.Parse(time.RFC3339Nano, f.value)
		if err != nil {
			return Accepted{}, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.into = t.UTC()
	}
	return a, nil
}

// replayKey is the context key of OnReplay's function.
type replayKey struct{}

// OnReplay returns ctx carrying f, which Create calls, before it returns,
// when its answer is a replay: the 201 remembered under the request's
// Idempotency-Key (a done record), not a ticket this request admitted.
// The transports use it for the Idempotent-Replayed header; a first
// answer, a rejection or an error never calls f. A takeover of a twin
// presumed dead does not count as a replay: whether the twin's 201 ever
// reached anyone is unknown, and this request settled the key.
func OnReplay(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, replayKey{}, f)
}

// replayed calls ctx's OnReplay function, if any.
func replayed(ctx context.Context) {
	if f, ok := ctx.Value(replayKey{}).(func()); ok && f != nil {
		f()
	}
}

// createIdempotent is create_ticket under an Idempotency-Key.
func (s *Service) createIdempotent(ctx context.Context, t tenants.Tenant, typ string, c Content, key string) (Accepted, error) {
	kv, err := s.idempotencyBucket(ctx)
	if err != nil {
		return Accepted{}, err
	}
	keyHash := hexSHA256(key)
	kvKey := subjects.IdempotencyKey(t.ID, keyHash)
	bodyHash := RequestHash(t.ID, typ, c)
	waitUntil := time.Now().Add(s.budget.ETA + time.Second)
	for attempt := 1; ; attempt++ {
		rec := subjects.IdempotencyRecord{
			State: subjects.IdempotencyPending, BodyHash: bodyHash, Nonce: subjects.NewTicketNonce(), Created: subjects.Stamp(s.now()),
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return Accepted{}, fmt.Errorf("encoding idempotency record: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		rev, err := kv.Create(cctx, kvKey, data, jetstream.KeyTTL(idemPendingTTL))
		cancel()
		if err == nil {
			return s.createClaimed(ctx, t, typ, c, kv, kvKey, keyHash, rev, rec, false)
		}
		if !jskit.CreateLost(err) {
			return Accepted{}, unavailable(fmt.Errorf("claiming idempotency key %s: %w", kvKey, err))
		}
		acc, retry, stale, err := s.awaitTwin(ctx, kv, kvKey, bodyHash, waitUntil)
		if stale != nil {
			acc, retry, err = s.takeOver(ctx, t, typ, c, kv, kvKey, keyHash, *stale)
		} else if err == nil && !retry {
			acc = s.currentPlan(ctx, t, acc)
			replayed(ctx)
		}
		if !retry {
			return acc, err
		}
		if attempt >= idemClaimAttempts || !time.Now().Before(waitUntil) {
			return Accepted{}, ErrIdempotencyInUse
		}
	}
}

// createClaimed admits the ticket of the key this request has claimed
// (rec, at rev), then remembers it or forgets the attempt. takeover: the
// claim was taken over from a twin presumed dead (see takeOver).
func (s *Service) createClaimed(ctx context.Context, t tenants.Tenant, typ string, c Content,
	kv jetstream.KeyValue, kvKey, keyHash string, rev uint64, rec subjects.IdempotencyRecord, takeover bool) (Accepted, error) {
	log := s.logger.With(slog.String("tenant", t.ID), slog.String("nonce", rec.Nonce), slog.String("key", kvKey))
	// Real time: a context deadline is real time, whatever the clock.
	actx, cancel := context.WithTimeout(ctx, s.budget.IdempotencyClaim())
	acc, unknown, err := s.admit(actx, t, typ, c, rec.Nonce, takeover)
	if takeover && errors.Is(err, errNonceReleased) {
		// The twin's ticket was written and then released (by the
		// release its twin sent after an unknown outcome): no client
		// was told of it. The claim takes a fresh nonce, revision-checked
		// (one retry wins), and admits a ticket with it.
		rec.Nonce = subjects.NewTicketNonce()
		if rev, err = s.writeRecord(actx, t, keyHash, rev, rec, idemPendingTTL); err == nil {
			log = log.With(slog.String("fresh_nonce", rec.Nonce))
			log.Warn("the taken-over nonce's ticket was released; admitting with a fresh nonce")
			takeover = false
			acc, unknown, err = s.admit(actx, t, typ, c, rec.Nonce, false)
		} else if jskit.WrongLastSequence(err) {
			err = ErrIdempotencyInUse
		} else {
			err = unavailable(fmt.Errorf("giving idempotency key %s a fresh nonce: %w", kvKey, err))
		}
	}
	cancel()
	if err == nil {
		return s.remember(ctx, t, keyHash, rev, rec, acc, log)
	}
	// A rejection is not remembered: a later try with the key is a new
	// attempt. Nor is an outage, once the nonce's ticket, if the reserve
	// wrote one, is released; no 201 was ever given for a fresh nonce. A
	// taken-over nonce is left alone (its ticket may be the twin's): the
	// record stays pending, for the next retry to take over.
	forget := !unknown
	if unknown && !takeover {
		forget = s.releaseNonce(ctx, t.ID, rec.Nonce, err)
	}
	if !forget {
		log.Warn("an idempotent attempt's outcome is unknown; its claim stays pending until a retry takes it over", slog.Any("err", err))
		return Accepted{}, err
	}
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer dcancel()
	if perr := kv.Purge(dctx, kvKey, jetstream.LastRevision(rev), jetstream.PurgeTTL(idemMarkerTTL)); perr != nil {
		log.Warn("forgetting a failed idempotent attempt; the claim expires by itself", slog.Any("err", perr))
	}
	return Accepted{}, err
}

// remember replaces the pending record at rev by the done record holding
// acc, and returns acc.
func (s *Service) remember(ctx context.Context, t tenants.Tenant, keyHash string, rev uint64,
	rec subjects.IdempotencyRecord, acc Accepted, log *slog.Logger) (Accepted, error) {
	raw, err := encodeAccepted(acc)
	if err != nil {
		return Accepted{}, fmt.Errorf("encoding answer: %w", err)
	}
	rec.State, rec.Ticket, rec.Response = subjects.IdempotencyDone, acc.TicketID, raw
	if _, err := s.writeRecord(ctx, t, keyHash, rev, rec, idemDoneTTL); err != nil {
		// The ticket exists; a retry with the key finds the pending record
		// and, once it is stale, takes it over: the responders answer this
		// ticket, found by its nonce.
		log.Warn("remembering an idempotent answer", slog.String("ticket", acc.TicketID), slog.Any("err", err))
	}
	return acc, nil
}

// writeRecord replaces revision rev of a key's record. A KV Update would
// drop the TTL (docs/nats.md): the new revision is published under
// compare-and-set with its own TTL instead. It returns the new revision.
func (s *Service) writeRecord(ctx context.Context, t tenants.Tenant, keyHash string, rev uint64,
	rec subjects.IdempotencyRecord, ttl time.Duration) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encoding idempotency record: %w", err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	ack, err := s.js.Publish(pctx, subjects.IdempotencySubject(t.ID, keyHash), data,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// currentPlan is a remembered 201 with its ticket's current agent and
// slot: the ticket may have moved since (feasibility admission), and a
// 201 names the current plan. A ticket cancelled since, or a look-up that
// fails, leaves the answer as it was remembered.
func (s *Service) currentPlan(ctx context.Context, t tenants.Tenant, acc Accepted) Accepted {
	state, err := s.find(ctx, t, acc.TicketID, 0)
	if err != nil {
		s.logger.Debug("replaying an idempotent answer as remembered: its ticket's current slot is unknown",
			slog.String("tenant", t.ID), slog.String("ticket", acc.TicketID), slog.Any("err", err))
		return acc
	}
	ev, status, found := state.Latest()
	if !found || status == subjects.StatusCancelled || ev.Ticket != acc.TicketID || subjects.ValidID(ev.Agent) != nil {
		return acc
	}
	acc.Agent, acc.SlotTime = ev.Agent, ev.SlotTime.UTC()
	return acc
}

// staleClaim is a pending record whose twin is presumed dead, at the
// revision it was read.
type staleClaim struct {
	rev uint64
	rec subjects.IdempotencyRecord
}

// takeOver claims a key whose pending record is stale and gives its nonce
// one ticket: the one the twin admitted, or a new admission under the
// same nonce (reserve with Takeover). retry means another request took
// the record over first (or its twin finished after all): look at the key
// again.
func (s *Service) takeOver(ctx context.Context, t tenants.Tenant, typ string, c Content, kv jetstream.KeyValue,
	kvKey, keyHash string, stale staleClaim) (Accepted, bool, error) {
	rec := subjects.IdempotencyRecord{State: subjects.IdempotencyPending, BodyHash: stale.rec.BodyHash,
		Nonce: stale.rec.Nonce, Ticket: stale.rec.Ticket, Created: subjects.Stamp(s.now())}
	if rec.Nonce == "" { // a record of the version before nonces
		rec.Nonce = subjects.NewTicketNonce()
	}
	log := s.logger.With(slog.String("tenant", t.ID), slog.String("nonce", rec.Nonce), slog.String("key", kvKey))
	rev, err := s.writeRecord(ctx, t, keyHash, stale.rev, rec, idemPendingTTL)
	if jskit.WrongLastSequence(err) {
		return Accepted{}, true, nil
	}
	if err != nil {
		return Accepted{}, false, unavailable(fmt.Errorf("taking over idempotency key %s: %w", kvKey, err))
	}
	log.Warn("took over an Idempotency-Key whose request is presumed dead",
		slog.Time("claimed_at", stale.rec.Created))
	if rec.Ticket != "" {
		// The twin fixed a whole ticket id (the version before nonces):
		// if it was written, it is the answer.
		state, err := s.find(ctx, t, rec.Ticket, 0)
		if err != nil {
			// Whether the ticket exists is unknown: the record stays
			// pending (a later retry takes it over again).
			return Accepted{}, false, unavailable(fmt.Errorf("looking for ticket %s of a taken-over key: %w", rec.Ticket, err))
		}
		if ev, _, found := state.Latest(); found {
			acc, err := s.remember(ctx, t, keyHash, rev, rec, acceptedOf(ev), log)
			return acc, false, err
		}
	}
	acc, err := s.createClaimed(ctx, t, typ, c, kv, kvKey, keyHash, rev, rec, true)
	return acc, false, err
}

// awaitTwin handles a key that another request holds: a different body is
// ErrIdempotencyReused; a done record is its ticket again; a pending one older than the
// takeover bound is returned as stale (its twin is presumed dead); a
// younger one is watched until it is done or gone (retry: claim the key
// again), or until waitUntil: then ErrIdempotencyInUse.
func (s *Service) awaitTwin(ctx context.Context, kv jetstream.KeyValue, kvKey, bodyHash string,
	waitUntil time.Time) (acc Accepted, retry bool, stale *staleClaim, err error) {
	wctx, cancel := context.WithDeadline(ctx, waitUntil)
	defer cancel()
	w, err := kv.Watch(wctx, kvKey)
	if err != nil {
		return Accepted{}, false, nil, unavailable(fmt.Errorf("watching idempotency key %s: %w", kvKey, err))
	}
	defer jskit.StopWatcher(w)
	seen := false
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return Accepted{}, false, nil, ErrIdempotencyInUse
			}
			if e == nil { // end of the current values
				if !seen {
					return Accepted{}, true, nil, nil // gone before we looked
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				return Accepted{}, true, nil, nil // forgotten or expired: a new attempt
			}
			var rec subjects.IdempotencyRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return Accepted{}, false, nil, internal(fmt.Errorf("decoding idempotency record %s: %w", kvKey, err))
			}
			if rec.BodyHash != bodyHash {
				return Accepted{}, false, nil, ErrIdempotencyReused
			}
			if rec.State == subjects.IdempotencyDone {
				acc, err := decodeAccepted(rec.Response)
				if err != nil {
					return Accepted{}, false, nil, internal(fmt.Errorf("decoding the answer in idempotency record %s: %w", kvKey, err))
				}
				return acc, false, nil, nil
			}
			if takeable(rec) && s.now().Sub(rec.Created) >= s.budget.IdempotencyTakeover() {
				return Accepted{}, false, &staleClaim{rev: e.Revision(), rec: rec}, nil
			}
			seen = true
		case <-wctx.Done():
			return Accepted{}, false, nil, ErrIdempotencyInUse
		}
	}
}

// takeable reports whether a pending record names what a takeover needs:
// its nonce, or (the version before nonces) its ticket id. Any other
// record is left to expire.
func takeable(rec subjects.IdempotencyRecord) bool {
	if rec.Nonce != "" {
		return subjects.ValidTicketNonce(rec.Nonce) == nil
	}
	return subjects.ValidID(rec.Ticket) == nil
}

// idempotencyBucket returns the bucket, creating it on first use.
func (s *Service) idempotencyBucket(ctx context.Context) (jetstream.KeyValue, error) {
	if kv := s.idem.Load(); kv != nil {
		return *kv, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv := s.idem.Load(); kv != nil {
		return *kv, nil
	}
	bctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := jskit.OpenBucket(bctx, s.js, subjects.IdempotencyBucketConfig(s.replicas))
	if err != nil {
		return nil, unavailable(fmt.Errorf("opening bucket %s: %w", subjects.BucketIdempotency, err))
	}
	s.idem.Store(&kv)
	return kv, nil
}
