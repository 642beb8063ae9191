package workers

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// deadLetter parks the raw message on the dead-letter stream with the
// reason, logs an error, and terminates it. If the dead letter cannot be
// published, the message is redelivered instead: never dropped.
func (a *Allocator) deadLetter(ctx context.Context, log *slog.Logger, msg jetstream.Msg, d delivery, dec decision) {
	dl := deadLetterRecord(d, dec)
	pctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	if _, err := a.js.PublishMsg(pctx, dl, jetstream.WithMsgID(deadLetterID(d)),
		jetstream.WithExpectStream(subjects.StreamDeadLetters)); err != nil {
		a.redeliver(log, msg, redeliverOf(d, dec, retryDeadLetterPublish, err, a.backoff))
		return
	}
	a.m.deadLettered(dec.kind)
	a.settled.add(1)
	log.Error("slot record dead-lettered", slog.String("kind", dec.kind),
		slog.String("reason", dl.Header.Get(subjects.HeaderDeadLetterReason)), slog.String("dead_letter_subject", dl.Subject))
	if err := msg.TermWithReason(dec.kind); err != nil {
		// Parked already; a redelivery dead-letters it again under the
		// same message id, which the stream dedupes.
		log.Warn("term failed after dead-lettering", slog.Any("err", err))
	}
}

// deadLetterID is the message id of d's dead letter: a redelivery that
// dead-letters it again is deduplicated. Each shard's stream has its own
// sequences, so the stream is part of it. A parked record's is that of
// its original (either copy dead-letters once), or, when it names no
// usable original or is a dead letter put back by `tms ops dlq replay`
// (subjects.HeaderReplayOf), its sequence in the parked stream: a replay
// that fails again is a new dead letter, not a duplicate of the first
// (dropped by the stream's duplicate window, the record would be lost).
func deadLetterID(d delivery) string {
	if d.parked && (d.shard < 0 || d.seq == 0 || d.header.Get(subjects.HeaderReplayOf) != "") {
		return "dlq-" + subjects.StreamParked + "-" + strconv.FormatUint(d.parkedSeq, 10)
	}
	return "dlq-" + subjects.SlotStream(d.shard) + "-" + strconv.FormatUint(d.seq, 10)
}

// deadLetterRecord is the dead letter of delivery d for the decision dec:
// the original body and headers under the ticket's dead-letter subject
// (DeadLetterInvalid unless the key names a tenant and the record a
// ticket id), with the reason, the original subject and its stream
// sequence.
func deadLetterRecord(d delivery, dec decision) *nats.Msg {
	subject := subjects.DeadLetterInvalid
	if dec.tenant != "" && dec.ticket != "" {
		subject = subjects.DeadLetterSubject(dec.tenant, dec.ticket)
	}
	dl := &nats.Msg{Subject: subject, Data: d.data, Header: nats.Header{}}
	for k, vs := range d.header {
		// The original's Nats-* headers (message id, expectations) would
		// dedupe or fail the dead letter itself.
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		dl.Header[k] = append([]string(nil), vs...)
	}
	dl.Header.Set(subjects.HeaderDeadLetterReason, headerValue(dec.reason))
	dl.Header.Set(subjects.HeaderOriginalSubject, headerValue(d.subject))
	dl.Header.Set(subjects.HeaderOriginalSequence, strconv.FormatUint(d.seq, 10))
	return dl
}

// headerValue keeps a header value on one line and bounded.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
