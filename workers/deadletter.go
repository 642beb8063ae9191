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
func (a *Allocator) deadLetter(ctx context.Context, log *slog.Logger, msg jetstream.Msg, md *jetstream.MsgMetadata,
	tenant, ticket, kind, reason string) {
	subject := subjects.DeadLetterInvalid
	if tenant != "" && ticket != "" {
		subject = subjects.DeadLetterSubject(tenant, ticket)
	}
	reason = headerValue(reason)
	dl := &nats.Msg{Subject: subject, Data: msg.Data(), Header: nats.Header{}}
	for k, vs := range msg.Headers() {
		// The original's Nats-* headers (message id, expectations) would
		// dedupe or fail the dead letter itself.
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		dl.Header[k] = append([]string(nil), vs...)
	}
	dl.Header.Set(subjects.HeaderDeadLetterReason, reason)
	dl.Header.Set(subjects.HeaderOriginalSubject, headerValue(msg.Subject()))
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	dl.Header.Set(subjects.HeaderOriginalSequence, seq)
	pctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	if _, err := a.js.PublishMsg(pctx, dl, jetstream.WithMsgID("dlq-"+seq),
		jetstream.WithExpectStream(subjects.StreamDeadLetters)); err != nil {
		a.retry(log, msg, md, "dead_letter_publish", err)
		return
	}
	a.m.deadLettered(kind)
	log.Error("ticket event dead-lettered", slog.String("kind", kind), slog.String("reason", reason),
		slog.String("dead_letter_subject", subject))
	if err := msg.TermWithReason(kind); err != nil {
		// Parked already; a redelivery dead-letters it again under the
		// same message id, which the stream dedupes.
		log.Warn("term failed after dead-lettering", slog.Any("err", err))
	}
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
