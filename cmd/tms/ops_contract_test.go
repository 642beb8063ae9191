package main_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// contractWorker answers subjects.SubjectWorkersInfo as subjects/ops.go
// says a worker does, reading the live setting when asked; with stuck it
// never applies it. It stands in for the workers' side (built apart) so
// that tms ops's side of the contract is tested on its own; the tests
// against tms serve and tms worker are in ops_test.go.
type contractWorker struct {
	id    string
	stuck bool
	js    jetstream.JetStream
	mu    sync.Mutex
	info  subjects.WorkerInfo
}

func startContractWorker(t *testing.T, nc *nats.Conn, id string, stuck bool) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w := &contractWorker{id: id, stuck: stuck, js: js, info: subjects.WorkerInfo{ID: id, Host: "test", PID: 1, Version: "test",
		Command: "worker", Started: time.Now(), Concurrency: 8, ConcurrencySource: subjects.ConcurrencyFromFlag, BatchSize: 500}}
	sub, err := nc.Subscribe(subjects.SubjectWorkersInfo, func(m *nats.Msg) {
		data, err := subjects.EncodeWorkerInfo(w.current(t))
		if err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// current applies the setting in the bucket (unless stuck) and returns
// the answer.
func (w *contractWorker) current(t *testing.T) subjects.WorkerInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stuck {
		return w.info
	}
	ctx := testkit.Context(t, 2*time.Second)
	kv, err := w.js.KeyValue(ctx, subjects.BucketOps)
	if err != nil {
		return w.info
	}
	e, err := kv.Get(ctx, subjects.KeyAllocatorSettings)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		w.info.Concurrency, w.info.ConcurrencySource = 8, subjects.ConcurrencyFromFlag
	case err == nil:
		if s, err := subjects.DecodeAllocatorSettings(e.Value()); err == nil {
			w.info.Concurrency, w.info.ConcurrencySource, w.info.SettingsRevision = s.Concurrency, subjects.ConcurrencyFromOps, e.Revision()
		}
	}
	return w.info
}

// TestOpsWorkersContract: tms ops gathers every worker's answer and skips
// one that is not a worker's info (saying so); scale writes the setting
// (creating the bucket), waits until the workers report it, and --reset
// deletes it; a worker that never applies it fails the scale by
// --timeout, named.
func TestOpsWorkersContract(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t)
	nc := ns.Connect(t)
	env := []string{"TMS_NATS_URL=" + ns.URL()}
	startContractWorker(t, nc, "w-one", false)
	startContractWorker(t, nc, "w-two", false)
	// Anyone may answer on the subject: garbage is not a worker.
	junk, err := nc.Subscribe(subjects.SubjectWorkersInfo, func(m *nats.Msg) { _ = m.Respond([]byte(`{"id":"x","extra":1}`)) })
	if err != nil {
		t.Fatal(err)
	}

	var doc workersJSON
	opsJSON(t, env, &doc, "workers")
	if len(doc.Workers) != 2 || doc.Workers[0].ID != "w-one" || doc.Workers[1].ID != "w-two" || doc.Settings != nil {
		t.Fatalf("workers: %+v, want w-one and w-two, no live setting", doc)
	}
	if h := mustOps(t, env, "workers"); !strings.Contains(h.stdout, "1 answers on "+subjects.SubjectWorkersInfo+" were not a worker's info") ||
		!strings.Contains(h.stdout, "WORKER ") || !strings.Contains(h.stdout, "w-two ") {
		t.Errorf("workers with a junk answer:\n%s", h.stdout)
	}
	if err := junk.Unsubscribe(); err != nil {
		t.Fatal(err)
	}

	opsJSON(t, env, &doc, "workers", "scale", "--concurrency", "3")
	if doc.Settings == nil || doc.Settings.Concurrency != 3 || doc.Revision == 0 || len(doc.Workers) != 2 {
		t.Fatalf("scale --concurrency 3: %+v", doc)
	}
	for _, w := range doc.Workers {
		if w.Concurrency != 3 || w.ConcurrencySource != subjects.ConcurrencyFromOps || w.SettingsRevision != doc.Revision {
			t.Errorf("worker %+v after the scale, want 3 from ops at revision %d", w, doc.Revision)
		}
	}
	// What the workers read back is the contract's value.
	kv, err := ns.JetStream(t).KeyValue(testkit.Context(t, 5*time.Second), subjects.BucketOps)
	if err != nil {
		t.Fatalf("the ops bucket: %v", err)
	}
	e, err := kv.Get(testkit.Context(t, 5*time.Second), subjects.KeyAllocatorSettings)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := subjects.DecodeAllocatorSettings(e.Value()); err != nil || s.Concurrency != 3 || !strings.Contains(s.UpdatedBy, "@") || s.UpdatedAt.IsZero() {
		t.Errorf("stored setting %+v (%v)", s, err)
	}
	opsJSON(t, env, &doc, "workers")
	if doc.Settings == nil || doc.Settings.Concurrency != 3 {
		t.Errorf("workers after the scale: live setting %+v, want 3", doc.Settings)
	}

	opsJSON(t, env, &doc, "workers", "scale", "--reset")
	for _, w := range doc.Workers {
		if w.ConcurrencySource != subjects.ConcurrencyFromFlag || w.Concurrency != 8 {
			t.Errorf("worker %+v after --reset, want its flag's 8", w)
		}
	}
	if _, err := kv.Get(testkit.Context(t, 5*time.Second), subjects.KeyAllocatorSettings); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("setting after --reset: %v, want deleted", err)
	}

	startContractWorker(t, nc, "w-stuck", true)
	r := runOps(t, env, "workers", "scale", "--concurrency", "5", "--timeout", "2s")
	if lines := nonEmptyLines(r.stderr); r.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "w-stuck") ||
		strings.Contains(lines[0], "w-one") || !strings.Contains(lines[0], "--timeout 2s") {
		t.Errorf("scale with a stuck worker: exit %d, stderr %q; want exit 1 naming w-stuck only", r.code, r.stderr)
	}
}

// TestOpsReplayRefusesWhatCannotBeWritten: replay puts a good dead letter
// back on the parked stream (its headers and message id as subjects/ops.go
// says) and deletes it, while one on DeadLetterInvalid and one whose
// record does not decode are refused with the reason and kept: exit 1.
// A sequence that is not there is gone, a no-op.
func TestOpsReplayRefusesWhatCannotBeWritten(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t)
	js := ns.JetStream(t)
	ctx := testkit.Context(t, 30*time.Second)
	env := []string{"TMS_NATS_URL=" + ns.URL()}
	dlq, err := js.CreateStream(ctx, subjects.DeadLettersStreamConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	parked, err := js.CreateStream(ctx, subjects.ParkedStreamConfig(1))
	if err != nil {
		t.Fatal(err)
	}

	tenant, agent := "ctenant", "aagent"
	minute := time.Now().UTC().Truncate(time.Minute).Add(10 * time.Minute)
	ticket, err := subjects.NewSlotTicketID(agent, minute, subjects.NewTicketNonce())
	if err != nil {
		t.Fatal(err)
	}
	created := minute.Add(-5 * time.Minute)
	rec := subjects.ConfirmedRecord(subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: tenant, Ticket: ticket, Type: "GOLD",
		Agent: agent, SlotTime: minute, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}, 0)
	body, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	original := "$KV." + subjects.SlotBucket(0) + "." + subjects.SlotKey(tenant, agent, minute)
	if _, err := subjects.DecodeParkedRecord(subjects.ParkedSubject(tenant, ticket), original, body); err != nil {
		t.Fatalf("the test's record is not writable: %v", err)
	}
	publish := func(subject string, data []byte) uint64 {
		m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		m.Header.Set(subjects.HeaderDeadLetterReason, "test")
		m.Header.Set(subjects.HeaderOriginalSubject, original)
		m.Header.Set(subjects.HeaderOriginalSequence, "7")
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	good := publish(subjects.DeadLetterSubject(tenant, ticket), body)
	invalid := publish(subjects.DeadLetterInvalid, []byte(`not json`))
	garbage := publish(subjects.DeadLetterSubject(tenant, "tother"), []byte(`{"state":"confirmed"}`))

	var list dlqListDoc
	opsJSON(t, env, &list, "dlq", "list")
	if list.Total != 3 || len(list.DeadLetters) != 3 || list.DeadLetters[1].Tenant != "" {
		t.Fatalf("dlq list: %+v, want 3, the invalid one naming no tenant", list)
	}
	opsJSON(t, env, &list, "dlq", "list", "--limit", "1")
	if list.Total != 3 || len(list.DeadLetters) != 1 || list.DeadLetters[0].Seq != good {
		t.Errorf("dlq list --limit 1: %+v", list)
	}
	if show := mustOps(t, env, "dlq", "show", fmt.Sprint(invalid)); !strings.Contains(show.stdout, `"not json"`) {
		t.Errorf("dlq show of a body that is not JSON:\n%s", show.stdout)
	}

	r := runOps(t, env, "dlq", "replay", "--all", "--json")
	var doc replayDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 1 || !strings.Contains(r.stderr, "2 of 3 dead letters not replayed") {
		t.Fatalf("replay --all: exit %d, stderr %q, stdout %s (%v)", r.code, r.stderr, r.stdout, err)
	}
	outcome := map[uint64]string{}
	for _, res := range doc.Results {
		outcome[res.Seq] = res.Outcome + ": " + res.Error
	}
	if !strings.HasPrefix(outcome[good], "replayed") || !strings.HasPrefix(outcome[invalid], "refused") ||
		!strings.Contains(outcome[invalid], subjects.DeadLetterInvalid) || !strings.HasPrefix(outcome[garbage], "refused") {
		t.Errorf("replay outcomes %v", outcome)
	}
	m, err := parked.GetLastMsgForSubject(ctx, subjects.ParkedSubject(tenant, ticket))
	if err != nil {
		t.Fatalf("the replayed record on the parked stream: %v", err)
	}
	if string(m.Data) != string(body) || m.Header.Get(subjects.HeaderReplayOf) != fmt.Sprint(good) ||
		m.Header.Get(subjects.HeaderOriginalSubject) != original || m.Header.Get(subjects.HeaderOriginalSequence) != "7" ||
		m.Header.Get(nats.MsgIdHdr) != subjects.ReplayMsgID(good) {
		t.Errorf("replayed message %s %v %s", m.Subject, m.Header, m.Data)
	}
	if info, err := parked.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("parked stream after the replay: %+v (%v), want the one replayed record", info, err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Errorf("DLQ after the replay: %+v (%v), want the 2 refused kept", info, err)
	}
	// Gone: the replayed one, and one that never was.
	opsJSON(t, env, &doc, "dlq", "replay", fmt.Sprint(good), "99")
	if len(doc.Results) != 2 || doc.Results[0].Outcome != "gone" || doc.Results[1].Outcome != "gone" {
		t.Errorf("replay of what is not there: %+v, want gone twice", doc)
	}
}
