package workers

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"tms/subjects"
)

// TestDeadLetterRecord: a dead letter keeps the original body and headers
// but the original's Nats-* headers, goes to its ticket's dead-letter
// subject (DeadLetterInvalid when the subject names no ticket), and
// records the reason and original subject on one bounded line and the
// stream sequence.
func TestDeadLetterRecord(t *testing.T) {
	t.Parallel()
	header := nats.Header{}
	header.Set("Nats-Msg-Id", "ticket-tticket-created")
	header.Set("Nats-Expected-Last-Subject-Sequence", "0")
	header["Traceparent"] = []string{"00-abc-def-01", "second"}
	d := delivery{subject: decSubject, data: []byte(`{"event":"created"}`), seq: 42}
	dec := deadLetterOf(decision{tenant: "ctenant", ticket: "tticket"}, kindInvalid, "line one\nline two\t"+strings.Repeat("x", 600))

	dl := deadLetterRecord(d, header, dec)
	if dl.Subject != subjects.DeadLetterSubject("ctenant", "tticket") {
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

	bad := delivery{subject: "tms.tickets.c*\r\n.t", data: []byte(`x`), seq: 7}
	dl = deadLetterRecord(bad, nil, decide(bad))
	if dl.Subject != subjects.DeadLetterInvalid {
		t.Fatalf("subject %q for a subject naming no ticket, want %q", dl.Subject, subjects.DeadLetterInvalid)
	}
	if got := dl.Header.Get(subjects.HeaderOriginalSubject); got != "tms.tickets.c*  .t" {
		t.Fatalf("original subject %q, want it on one line", got)
	}
	if !strings.HasPrefix(dl.Header.Get(subjects.HeaderDeadLetterReason), "subject: ") {
		t.Fatalf("reason %q, want the subject's fault", dl.Header.Get(subjects.HeaderDeadLetterReason))
	}
}
