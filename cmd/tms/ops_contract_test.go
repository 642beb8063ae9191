package main_test

import (
	"errors"
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
