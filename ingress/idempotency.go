package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// Idempotency-Key (API.md): the same key from the same tenant within 24 h
// returns the first 201 again and creates nothing new; a rejection is not
// remembered; the same key with another body is 422; a twin still in
// flight is waited for, or answered 409.
//
// A key is claimed with a KV Create of a pending record that fixes the
// ticket id; the claim carries a short TTL, so a process that dies half way
// blocks the key for pendingTTL at most. After a 201 the record is
// replaced, revision-checked, by the done record with a 24 h TTL; after a
// 409 or 503 it is purged.
const (
	idempotencyHeader    = "Idempotency-Key"
	maxIdempotencyKeyLen = 128
	idemPendingTTL       = 30 * time.Second
	idemDoneTTL          = 24 * time.Hour
	// idemMarkerTTL is how long the purge marker of a forgotten attempt
	// stays (the bucket's LimitMarkerTTL): markers do not pile up.
	idemMarkerTTL = time.Minute
	// idemClaimAttempts bounds how often a request tries to claim a key
	// that a twin holds and then gives up.
	idemClaimAttempts = 3
)

// idempotencyKeyOf checks the Idempotency-Key values of a request (HTTP
// or NATS header): none is nil; one must be 1-128 printable ASCII
// characters.
func idempotencyKeyOf(values []string) (*string, error) {
	switch len(values) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, errInvalidField(idempotencyHeader, "header is given %d times; give it once", len(values))
	}
	v := values[0]
	if len(v) == 0 || len(v) > maxIdempotencyKeyLen {
		return nil, errInvalidField(idempotencyHeader, "header must be 1-%d printable ASCII characters (got %d bytes)",
			maxIdempotencyKeyLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return nil, errInvalidField(idempotencyHeader, "header must be 1-%d printable ASCII characters (byte %d is 0x%02x)",
				maxIdempotencyKeyLen, i, c)
		}
	}
	return &v, nil
}

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

// requestHash fingerprints the canonical fields of a create_ticket
// request, whatever their spacing or order in the body.
func requestHash(req createTicketRequest) string {
	return hexSHA256(subjects.OpCreateTicket, req.ClientID, req.TicketType)
}

// createIdempotent is create_ticket under an Idempotency-Key.
func (s *ticketService) createIdempotent(ctx context.Context, t tenants.Tenant, req createTicketRequest, key string) (answer, error) {
	kv, err := s.idempotencyBucket(ctx)
	if err != nil {
		return answer{}, err
	}
	keyHash := hexSHA256(key)
	kvKey := subjects.IdempotencyKey(t.ID, keyHash)
	bodyHash := requestHash(req)
	waitUntil := time.Now().Add(s.etaTimeout + time.Second)
	for attempt := 1; ; attempt++ {
		rec := subjects.IdempotencyRecord{
			State: subjects.IdempotencyPending, BodyHash: bodyHash, Ticket: newTicketID(), Created: stamp(s.now()),
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return answer{}, fmt.Errorf("encoding idempotency record: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		rev, err := kv.Create(cctx, kvKey, data, jetstream.KeyTTL(idemPendingTTL))
		cancel()
		if err == nil {
			return s.createClaimed(ctx, t, req, kv, kvKey, keyHash, rev, rec)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return answer{}, errUnavailable(fmt.Errorf("claiming idempotency key %s: %w", kvKey, err))
		}
		ans, retry, err := s.awaitTwin(ctx, t, kv, kvKey, bodyHash, waitUntil)
		if !retry {
			return ans, err
		}
		if attempt >= idemClaimAttempts || !time.Now().Before(waitUntil) {
			return answer{}, errIdempotencyInUse
		}
	}
}

var errIdempotencyInUse = newError(http.StatusConflict, codeIdempotencyInUse,
	"Idempotency-Key: a request with this key is still in flight; retry shortly")

// createClaimed admits the ticket whose key this request has claimed,
// then remembers the 201 or forgets the attempt.
func (s *ticketService) createClaimed(ctx context.Context, t tenants.Tenant, req createTicketRequest,
	kv jetstream.KeyValue, kvKey, keyHash string, rev uint64, rec subjects.IdempotencyRecord) (answer, error) {
	log := s.logger.With(slog.String("tenant", t.ID), slog.String("ticket", rec.Ticket), slog.String("key", kvKey))
	body, err := s.admit(ctx, t, req.TicketType, rec.Ticket)
	if err != nil {
		// A rejection or an outage is not remembered: a later try with
		// the key is a new attempt.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		if perr := kv.Purge(dctx, kvKey, jetstream.LastRevision(rev), jetstream.PurgeTTL(idemMarkerTTL)); perr != nil {
			log.Warn("forgetting a failed idempotent attempt; the claim expires by itself", slog.Any("err", perr))
		}
		return answer{}, err
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return answer{}, fmt.Errorf("encoding answer: %w", err)
	}
	rec.State, rec.Response = subjects.IdempotencyDone, raw
	data, err := json.Marshal(rec)
	if err != nil {
		return answer{}, fmt.Errorf("encoding idempotency record: %w", err)
	}
	// A KV Update would drop the TTL (NATS.md): publish the new revision
	// under compare-and-set with its own TTL instead.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if _, err := s.js.Publish(pctx, subjects.IdempotencySubject(t.ID, keyHash), data,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(idemDoneTTL)); err != nil {
		// The ticket exists; a retry with the key finds the pending record
		// and answers from the ticket itself (awaitTwin).
		log.Warn("remembering an idempotent answer", slog.Any("err", err))
	}
	return answer{status: http.StatusCreated, body: body}, nil
}

// awaitTwin handles a key that another request holds: a different body is
// 422; a done record is its 201 again; a pending one is watched until it
// is done or gone (retry: claim the key again), or until waitUntil. A twin
// that still has not finished by then, but whose ticket is already in the
// stream or the tenant database, is answered from that ticket; otherwise
// 409 idempotency_key_in_use.
func (s *ticketService) awaitTwin(ctx context.Context, t tenants.Tenant, kv jetstream.KeyValue, kvKey, bodyHash string,
	waitUntil time.Time) (ans answer, retry bool, err error) {
	wctx, cancel := context.WithDeadline(ctx, waitUntil)
	defer cancel()
	w, err := kv.Watch(wctx, kvKey)
	if err != nil {
		return answer{}, false, errUnavailable(fmt.Errorf("watching idempotency key %s: %w", kvKey, err))
	}
	defer func() { _ = w.Stop() }()
	var pending *subjects.IdempotencyRecord
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return s.answerFromTicket(ctx, t, pending)
			}
			if e == nil { // end of the current values
				if pending == nil {
					return answer{}, true, nil // gone before we looked
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				return answer{}, true, nil // forgotten or expired: a new attempt
			}
			var rec subjects.IdempotencyRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return answer{}, false, errInternal(fmt.Errorf("decoding idempotency record %s: %w", kvKey, err))
			}
			if rec.BodyHash != bodyHash {
				return answer{}, false, newError(http.StatusUnprocessableEntity, codeIdempotencyReused,
					"Idempotency-Key: already used with a different request body")
			}
			if rec.State == subjects.IdempotencyDone {
				return answer{status: http.StatusCreated, body: json.RawMessage(rec.Response)}, false, nil
			}
			pending = &rec
		case <-wctx.Done():
			return s.answerFromTicket(ctx, t, pending)
		}
	}
}

// answerFromTicket answers for a twin that did not finish in time: if its
// ticket was published, that ticket is the answer (its 201 again);
// otherwise the twin is still busy.
func (s *ticketService) answerFromTicket(ctx context.Context, t tenants.Tenant, pending *subjects.IdempotencyRecord) (answer, bool, error) {
	if pending == nil || ctx.Err() != nil {
		return answer{}, false, errIdempotencyInUse
	}
	ev, found, err := s.find(ctx, t, pending.Ticket)
	if err != nil || !found || ev.Event != subjects.TicketCreated {
		return answer{}, false, errIdempotencyInUse
	}
	return answer{status: http.StatusCreated, body: acceptedOf(ev)}, false, nil
}

// idempotencyBucket returns the bucket, creating it on first use.
func (s *ticketService) idempotencyBucket(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idem != nil {
		return s.idem, nil
	}
	bctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := s.js.KeyValue(bctx, subjects.BucketIdempotency)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = s.js.CreateKeyValue(bctx, subjects.IdempotencyBucketConfig(s.replicas))
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = s.js.KeyValue(bctx, subjects.BucketIdempotency)
		}
	}
	if err != nil {
		return nil, errUnavailable(fmt.Errorf("opening bucket %s: %w", subjects.BucketIdempotency, err))
	}
	s.idem = kv
	return kv, nil
}
