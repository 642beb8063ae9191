package workers

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// parkedMsg is a message of the parked stream; only its subject, headers
// and data are read.
type parkedMsg struct {
	jetstream.Msg
	m *nats.Msg
}

func (p *parkedMsg) Subject() string      { return p.m.Subject }
func (p *parkedMsg) Headers() nats.Header { return p.m.Header }
func (p *parkedMsg) Data() []byte         { return p.m.Data }

// TestParkedRecord: a parked copy keeps the original body and headers but
// the original's Nats-* headers, goes to its ticket's parked subject, and
// names the original's subject and stream sequence, which its delivery
// from the parked stream is read back from.
func TestParkedRecord(t *testing.T) {
	t.Parallel()
	header := nats.Header{}
	header.Set("Nats-Msg-Id", "original")
	header.Set("X-Trace", "abc")
	d := delivery{shard: 0, subject: decSubject, header: header, data: []byte(`{"state":"confirmed"}`), seq: 42}
	dec := decision{tenant: "ctenant", ticket: decTicket}
	m := parkedRecord(d, dec)
	if m.Subject != subjects.ParkedSubject("ctenant", decTicket) || string(m.Data) != string(d.data) {
		t.Errorf("parked %s %q", m.Subject, m.Data)
	}
	if m.Header.Get("Nats-Msg-Id") != "" || m.Header.Get("X-Trace") != "abc" {
		t.Errorf("headers %v", m.Header)
	}
	if m.Header.Get(subjects.HeaderOriginalSubject) != decSubject || m.Header.Get(subjects.HeaderOriginalSequence) != "42" {
		t.Errorf("original %v", m.Header)
	}
	header.Set("X-Trace", "changed")
	if m.Header.Get("X-Trace") != "abc" {
		t.Error("the parked copy shares the original's header values")
	}

	a := &Allocator{shards: []*allocShard{{index: 0}, {index: 1}}}
	back := a.parkedDelivery(&parkedMsg{m: m}, &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 9},
		NumDelivered: 2})
	if !back.parked || back.shard != 0 || back.subject != decSubject || back.seq != 42 || back.parkedSeq != 9 ||
		back.delivered != 2 || back.parkedSubject != m.Subject || string(back.data) != string(d.data) {
		t.Errorf("read back as %+v", back)
	}
	if dec := decideParked(back); dec.action != actDeadLetter || dec.tenant != "ctenant" {
		// The body is no whole record: refused, but as ctenant's.
		t.Errorf("decided %+v", dec)
	}
	m.Header.Set(subjects.HeaderOriginalSubject, "$KV."+subjects.SlotBucket(7)+"."+decKey)
	if back := a.parkedDelivery(&parkedMsg{m: m}, &jetstream.MsgMetadata{}); back.shard != -1 {
		t.Errorf("a bucket of no shard read back as shard %d", back.shard)
	}
}
