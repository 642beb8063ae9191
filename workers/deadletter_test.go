package workers

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"tms/subjects"
)

// TestDeadLetterRecord: a dead letter keeps the original body and headers
// but the original's Nats-* headers, goes to its ticket's dead-letter
// subject (DeadLetterInvalid unless the key names a tenant and the record
// a ticket), and records the reason and original subject on one bounded
// line and the stream sequence; its message id names the shard's stream
// and the sequence, so dead letters of two shards never dedupe each other.
func TestDeadLetterRecord(t *testing.T) {
	t.Parallel()
	header := nats.Header{}
	header.Set("Nats-Msg-Id", "ticket-tticket-created")
	header.Set("Nats-Expected-Last-Subject-Sequence", "0")
	header["Traceparent"] = []string{"00-abc-def-01", "second"}
	d := delivery{subject: decSubject, header: header, data: []byte(`{"state":"confirmed"}`), seq: 42}
	dec := deadLetterOf(decision{tenant: "ctenant", ticket: decTicket}, kindInvalid, "line one\nline two\t"+strings.Repeat("x", 600))

	dl := deadLetterRecord(d, dec)
	if dl.Subject != subjects.DeadLetterSubject("ctenant", decTicket) {
		t.Fatalf("subject %q, want the ticket's dead-letter subject", dl.Subject)
	}
	if string(dl.Data) != string(d.data) {
		t.Fatalf("data %q, want the original's", dl.Data)
	}
	for k := range dl.Header {
		if strings.HasPrefix(k, "Nats-") {
			t.Fatalf("dead letter carries the original's %s header", k)
		}
	}
	if got := dl.Header.Values("Traceparent"); len(got) != 2 || got[0] != "00-abc-def-01" || got[1] != "second" {
		t.Fatalf("Traceparent %q, want the original's two values", got)
	}
	header["Traceparent"][0] = "changed"
	if dl.Header.Get("Traceparent") != "00-abc-def-01" {
		t.Fatalf("the dead letter shares its header values with the original")
	}
	reason := dl.Header.Get(subjects.HeaderDeadLetterReason)
	if len(reason) != 512 || !strings.HasPrefix(reason, "line one line two x") {
		t.Fatalf("reason %q (%d bytes), want one line cut at 512 bytes", reason, len(reason))
	}
	if got := dl.Header.Get(subjects.HeaderOriginalSubject); got != decSubject {
		t.Fatalf("original subject %q, want %q", got, decSubject)
	}
	if got := dl.Header.Get(subjects.HeaderOriginalSequence); got != "42" {
		t.Fatalf("original sequence %q, want 42", got)
	}

	if a, b := deadLetterID(d), deadLetterID(delivery{shard: 1, seq: 42}); a == b || !strings.Contains(a, "42") {
		t.Fatalf("message ids %q and %q of sequence 42 in shards 0 and 1", a, b)
	}

	bad := delivery{subject: "$KV.c*\r\n.t", data: []byte(`x`), seq: 7}
	dl = deadLetterRecord(bad, decide(bad))
	if dl.Subject != subjects.DeadLetterInvalid {
		t.Fatalf("subject %q for a subject naming no slot, want %q", dl.Subject, subjects.DeadLetterInvalid)
	}
	if got := dl.Header.Get(subjects.HeaderOriginalSubject); got != "$KV.c*  .t" {
		t.Fatalf("original subject %q, want it on one line", got)
	}
	if !strings.HasPrefix(dl.Header.Get(subjects.HeaderDeadLetterReason), "subject: ") {
		t.Fatalf("reason %q, want the subject's fault", dl.Header.Get(subjects.HeaderDeadLetterReason))
	}

	// A body that names no ticket id that parses: the tenant alone does
	// not make a subject.
	junk := delivery{subject: decSubject, data: []byte(`{"ticket":"T.*"}`), seq: 8}
	if dl = deadLetterRecord(junk, decide(junk)); dl.Subject != subjects.DeadLetterInvalid {
		t.Fatalf("subject %q for a record naming no ticket, want %q", dl.Subject, subjects.DeadLetterInvalid)
	}
}

// TestDeadLetterIDOfReplay: a parked record is dead-lettered under its
// original's id (either copy dead-letters once), but one put back by
// `tms ops dlq replay` (HeaderReplayOf) under its own parked sequence,
// so that its second dead letter is kept, not dropped as a duplicate.
func TestDeadLetterIDOfReplay(t *testing.T) {
	t.Parallel()
	parked := delivery{shard: 2, seq: 42, parked: true, parkedSeq: 7, header: nats.Header{}}
	if got, want := deadLetterID(parked), "dlq-"+subjects.SlotStream(2)+"-42"; got != want {
		t.Fatalf("parked copy: id %q, want its original's %q", got, want)
	}
	replayed := parked
	replayed.header = nats.Header{subjects.HeaderReplayOf: []string{"3"}}
	if got, want := deadLetterID(replayed), "dlq-"+subjects.StreamParked+"-7"; got != want {
		t.Fatalf("replayed: id %q, want %q", got, want)
	}
}
