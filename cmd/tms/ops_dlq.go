package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// deadLetter is one message of the dead-letter stream as tms ops shows it.
type deadLetter struct {
	Seq             uint64    `json:"seq"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject"`
	Tenant          string    `json:"tenant,omitempty"` // empty: DeadLetterInvalid, or a subject that names none
	Ticket          string    `json:"ticket,omitempty"`
	Reason          string    `json:"reason"`
	OriginalSubject string    `json:"original_subject"`
	OriginalSeq     string    `json:"original_seq,omitempty"`
	ReplayOf        string    `json:"replay_of,omitempty"`
	// Headers and Body are shown by dlq show only.
	Headers map[string][]string `json:"headers,omitempty"`
	Body    json.RawMessage     `json:"body,omitempty"`
	BodyRaw string              `json:"body_raw,omitempty"` // a body that is not JSON
	// msg is the stream message it was read from.
	msg *jetstream.RawStreamMsg
}

const deadLetterPrefix = "tms.dlq.tickets."

// tenantDeadLetters is the subject filter of one tenant's dead letters.
func tenantDeadLetters(tenant string) string { return deadLetterPrefix + tenant + ".*" }

// parseDeadLetterSubject is DeadLetterSubject's inverse; ok false for
// DeadLetterInvalid and anything that is not tenant.ticket.
func parseDeadLetterSubject(subject string) (tenant, ticket string, ok bool) {
	rest, ok := strings.CutPrefix(subject, deadLetterPrefix)
	if !ok {
		return "", "", false
	}
	tenant, ticket, ok = strings.Cut(rest, ".")
	if !ok || subjects.ValidID(tenant) != nil || subjects.ValidID(ticket) != nil {
		return "", "", false
	}
	return tenant, ticket, true
}

// maxHeaderShown bounds a header value printed (anyone with access to the
// stream may publish one).
const maxHeaderShown = 1024

func clip(s string) string {
	if len(s) > maxHeaderShown {
		return s[:maxHeaderShown] + "..."
	}
	return s
}

func deadLetterOf(m *jetstream.RawStreamMsg, full bool) deadLetter {
	h := m.Header
	d := deadLetter{Seq: m.Sequence, Time: m.Time.UTC(), Subject: m.Subject,
		Reason: clip(h.Get(subjects.HeaderDeadLetterReason)), OriginalSubject: clip(h.Get(subjects.HeaderOriginalSubject)),
		OriginalSeq: clip(h.Get(subjects.HeaderOriginalSequence)), ReplayOf: clip(h.Get(subjects.HeaderReplayOf)), msg: m}
	d.Tenant, d.Ticket, _ = parseDeadLetterSubject(m.Subject)
	if full {
		d.Headers = map[string][]string{}
		for k, vs := range h {
			for _, v := range vs {
				d.Headers[k] = append(d.Headers[k], clip(v))
			}
		}
		if json.Valid(m.Data) {
			d.Body = json.RawMessage(m.Data)
		} else {
			d.BodyRaw = string(m.Data)
		}
	}
	return d
}

func (c *opsClient) dlqStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := c.js.Stream(ctx, subjects.StreamDeadLetters)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no dead-letter stream %s on this NATS (has a worker ever started?)", subjects.StreamDeadLetters)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", subjects.StreamDeadLetters, err)
	}
	return s, nil
}

// scanDeadLetters reads the dead letters matching filter, oldest first,
// at most limit, one direct read each: the next message on the filter
// from a sequence on.
func scanDeadLetters(ctx context.Context, s jetstream.Stream, filter string, limit int) ([]deadLetter, error) {
	var out []deadLetter
	for seq := uint64(1); len(out) < limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("reading %s: %w", subjects.StreamDeadLetters, err)
		}
		out = append(out, deadLetterOf(m, false))
		seq = m.Sequence + 1
	}
	return out, nil
}

func (c *opsClient) dlqFilter() string {
	if c.cfg.Tenant != "" {
		return tenantDeadLetters(c.cfg.Tenant)
	}
	return subjects.DeadLettersAll
}

func (c *opsClient) dlqList(ctx context.Context, out io.Writer) error {
	s, err := c.dlqStream(ctx)
	if err != nil {
		return err
	}
	dls, err := scanDeadLetters(ctx, s, c.dlqFilter(), c.cfg.Limit)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if c.cfg.JSON {
		if dls == nil {
			dls = []deadLetter{}
		}
		return writeJSON(out, struct {
			Total       uint64       `json:"total"`
			DeadLetters []deadLetter `json:"dead_letters"`
		}{info.State.Msgs, dls})
	}
	if len(dls) == 0 {
		fmt.Fprintf(out, "no dead letters (%d in %s in all)\n", info.State.Msgs, subjects.StreamDeadLetters)
		return nil
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "SEQ\tTIME\tTENANT\tTICKET\tREASON\tORIGINAL SUBJECT")
	for _, d := range dls {
		tenant, ticket := d.Tenant, d.Ticket
		if tenant == "" {
			tenant, ticket = "(invalid)", "-"
		}
		reason := d.Reason
		if d.ReplayOf != "" {
			reason += " (replay of " + d.ReplayOf + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Time.Format(time.RFC3339), tenant, ticket, oneLineText(reason), d.OriginalSubject)
	}
	tw.Flush()
	if uint64(len(dls)) < info.State.Msgs {
		fmt.Fprintf(out, "\n%d shown of %d in %s (--limit, --tenant)\n", len(dls), info.State.Msgs, subjects.StreamDeadLetters)
	}
	return nil
}

// oneLineText keeps a table cell on one line.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }

func (c *opsClient) dlqShow(ctx context.Context, out io.Writer) error {
	seqs, err := parseSeqs(c.cfg.Command, c.cfg.Args)
	if err != nil {
		return err
	}
	s, err := c.dlqStream(ctx)
	if err != nil {
		return err
	}
	m, err := s.GetMsg(ctx, seqs[0])
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("no dead letter %d in %s (replayed, deleted, or never there; see tms ops dlq list)", seqs[0], subjects.StreamDeadLetters)
	}
	if err != nil {
		return fmt.Errorf("reading dead letter %d: %w", seqs[0], err)
	}
	d := deadLetterOf(m, true)
	if c.cfg.JSON {
		return writeJSON(out, d)
	}
	tw := newTable(out)
	fmt.Fprintf(tw, "seq:\t%d\n", d.Seq)
	fmt.Fprintf(tw, "time:\t%s\n", d.Time.Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "subject:\t%s\n", d.Subject)
	if d.Tenant != "" {
		fmt.Fprintf(tw, "tenant:\t%s\nticket:\t%s\n", d.Tenant, d.Ticket)
	}
	tw.Flush()
	fmt.Fprintln(out, "headers:")
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tw = newTable(out)
	for _, k := range keys {
		for _, v := range d.Headers[k] {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, oneLineText(v))
		}
	}
	tw.Flush()
	fmt.Fprintln(out, "body:")
	if d.Body != nil {
		var b bytes.Buffer
		if err := json.Indent(&b, d.Body, "  ", "  "); err == nil {
			fmt.Fprintf(out, "  %s\n", b.String())
			return nil
		}
	}
	fmt.Fprintf(out, "  %q\n", d.BodyRaw)
	return nil
}

// replayResult is what became of one dead letter given to replay.
type replayResult struct {
	Seq    uint64 `json:"seq"`
	Tenant string `json:"tenant,omitempty"`
	Ticket string `json:"ticket,omitempty"`
	// Outcome: replayed (published to the parked stream and deleted from
	// the DLQ), gone (not in the DLQ: replayed before, or deleted),
	// refused (cannot be replayed, see Error), failed (see Error).
	Outcome   string `json:"outcome"`
	ParkedSeq uint64 `json:"parked_seq,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (c *opsClient) dlqReplay(ctx context.Context, out io.Writer) error {
	s, err := c.dlqStream(ctx)
	if err != nil {
		return err
	}
	var results []replayResult
	if c.cfg.All {
		dls, err := scanDeadLetters(ctx, s, c.dlqFilter(), 100000)
		if err != nil {
			return err
		}
		for _, d := range dls {
			results = append(results, c.replayOne(ctx, s, d.Seq, d.msg))
		}
	} else {
		seqs, err := parseSeqs(c.cfg.Command, c.cfg.Args)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			results = append(results, c.replayOne(ctx, s, seq, nil))
		}
	}
	bad := 0
	for _, r := range results {
		if r.Outcome == "refused" || r.Outcome == "failed" {
			bad++
		}
	}
	if c.cfg.JSON {
		if results == nil {
			results = []replayResult{}
		}
		if err := writeJSON(out, struct {
			Results []replayResult `json:"results"`
		}{results}); err != nil {
			return err
		}
	} else {
		if len(results) == 0 {
			fmt.Fprintln(out, "no dead letters to replay")
		} else {
			tw := newTable(out)
			fmt.Fprintln(tw, "SEQ\tTENANT\tTICKET\tOUTCOME\tDETAIL")
			for _, r := range results {
				detail := r.Error
				switch r.Outcome {
				case "replayed":
					detail = fmt.Sprintf("parked as %s seq %d, deleted from %s", subjects.StreamParked, r.ParkedSeq, subjects.StreamDeadLetters)
				case "gone":
					detail = "not in " + subjects.StreamDeadLetters + " (replayed before, or deleted): nothing to do"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Seq, orDash(r.Tenant), orDash(r.Ticket), r.Outcome, oneLineText(detail))
			}
			tw.Flush()
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d dead letters not replayed (see the table)", bad, len(results))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// replayOne puts dead letter seq back through the parked stream, then
// deletes it from the DLQ. m is the message when the caller has read it.
func (c *opsClient) replayOne(ctx context.Context, s jetstream.Stream, seq uint64, m *jetstream.RawStreamMsg) replayResult {
	r := replayResult{Seq: seq}
	if m == nil {
		var err error
		m, err = s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			r.Outcome = "gone"
			return r
		}
		if err != nil {
			r.Outcome, r.Error = "failed", "reading it: "+err.Error()
			return r
		}
	}
	if m.Subject == subjects.DeadLetterInvalid {
		r.Outcome = "refused"
		r.Error = "it is on " + subjects.DeadLetterInvalid + ": its record names no valid tenant and ticket, so no tenant database can take it (inspect it with tms ops dlq show)"
		return r
	}
	tenant, ticket, ok := parseDeadLetterSubject(m.Subject)
	if !ok {
		r.Outcome, r.Error = "refused", fmt.Sprintf("subject %q is not a ticket's dead letter", m.Subject)
		return r
	}
	r.Tenant, r.Ticket = tenant, ticket
	original := m.Header.Get(subjects.HeaderOriginalSubject)
	parked := subjects.ParkedSubject(tenant, ticket)
	// The parked consumer would dead-letter a record that does not
	// decode again at once: refuse it here, with the reason.
	if _, err := subjects.DecodeParkedRecord(parked, original, m.Data); err != nil {
		r.Outcome, r.Error = "refused", "its record cannot be written: "+err.Error()
		return r
	}
	msg := &nats.Msg{Subject: parked, Data: m.Data, Header: nats.Header{}}
	msg.Header.Set(subjects.HeaderOriginalSubject, original)
	msg.Header.Set(subjects.HeaderOriginalSequence, m.Header.Get(subjects.HeaderOriginalSequence))
	msg.Header.Set(subjects.HeaderReplayOf, strconv.FormatUint(seq, 10))
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(subjects.ReplayMsgID(seq)), jetstream.WithExpectStream(subjects.StreamParked))
	if err != nil {
		r.Outcome, r.Error = "failed", "publishing to "+subjects.StreamParked+": "+err.Error()
		return r
	}
	r.ParkedSeq = ack.Sequence
	// Deleted only once the parked stream holds it: a failure here leaves
	// the dead letter, and its next replay is a duplicate the parked
	// stream drops (same message id) or an idempotent write.
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		r.Outcome, r.Error = "failed", fmt.Sprintf("parked as seq %d, but deleting it from %s failed: %v (replaying it again is harmless)", ack.Sequence, subjects.StreamDeadLetters, err)
		return r
	}
	r.Outcome = "replayed"
	return r
}
