package main_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// askWorkers sends one workers' info request and decodes the first
// answer.
func askWorkers(t *testing.T, nc *nats.Conn) subjects.WorkerInfo {
	t.Helper()
	m, err := nc.Request(subjects.SubjectWorkersInfo, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("workers info: %v", err)
	}
	w, err := subjects.DecodeWorkerInfo(m.Data)
	if err != nil {
		t.Fatalf("workers info %q: %v", m.Data, err)
	}
	return w
}

// TestWorkerFollowsLiveSettings: a tms worker answers the workers' info
// request with its --alloc-concurrency, takes the live setting written to
// TMS_OPS without a restart (logged once, from and to), and goes back to
// its flag's value when the setting is deleted.
func TestWorkerFollowsLiveSettings(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json",
		"TMS_ALLOC_CONCURRENCY=3"}
	w := startTMS(t, env, "worker")
	w.logEvent("tms ready")
	nc := ns.Connect(t)

	info := askWorkers(t, nc)
	if info.Command != "worker" || info.Concurrency != 3 || info.ConcurrencySource != subjects.ConcurrencyFromFlag ||
		info.SettingsRevision != 0 || info.ID == "" || info.PID <= 0 || info.Version == "" || info.BatchSize != 500 {
		t.Fatalf("worker info %+v: want a worker at concurrency 3 from its flag, batch 500", info)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, subjects.BucketOps) // the worker created it
	if err != nil {
		t.Fatal(err)
	}
	body, err := subjects.EncodeAllocatorSettings(subjects.AllocatorSettings{Concurrency: 7, UpdatedAt: time.Now().UTC(),
		UpdatedBy: "test@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, subjects.KeyAllocatorSettings, body)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		got := askWorkers(t, nc)
		return got.ID == info.ID && got.Concurrency == 7 && got.ConcurrencySource == subjects.ConcurrencyFromOps &&
			got.SettingsRevision == rev
	}, "the worker at the live concurrency 7")
	changed := w.logEvent("allocator concurrency changed")
	if changed["from"] != 3.0 || changed["to"] != 7.0 || changed["source"] != subjects.ConcurrencyFromOps ||
		changed["revision"] != float64(rev) {
		t.Errorf("change logged as %v: want from 3 to 7, source ops, revision %d", changed, rev)
	}

	if err := kv.Delete(ctx, subjects.KeyAllocatorSettings); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		got := askWorkers(t, nc)
		return got.Concurrency == 3 && got.ConcurrencySource == subjects.ConcurrencyFromFlag && got.SettingsRevision == 0
	}, "the worker back at its flag's concurrency")
	if n := w.count("allocator concurrency changed"); n != 2 {
		t.Errorf("%d concurrency changes logged, want 2", n)
	}
	if w.exited() {
		t.Fatal("the worker exited")
	}
}

// TestAllocConcurrencyBounds: --alloc-concurrency and
// TMS_ALLOC_CONCURRENCY outside 1..256 are bad command lines (exit 2,
// one line naming the flag and the bounds).
func TestAllocConcurrencyBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"worker", "--nats-url", "nats://127.0.0.1:1", "--alloc-concurrency", "0"}},
		{nil, []string{"serve", "--alloc-concurrency", "257"}},
		{[]string{"TMS_ALLOC_CONCURRENCY=-3"}, []string{"worker", "--nats-url", "nats://127.0.0.1:1"}},
	} {
		p := startTMS(t, tc.env, tc.args...)
		if code := p.exit(30 * time.Second); code != 2 {
			t.Errorf("tms %q %q: exit %d, want 2; stderr %q", tc.env, tc.args, code, p.stderrText())
			continue
		}
		lines := nonEmptyLines(p.stderrText())
		if len(lines) != 1 || !strings.Contains(lines[0], "--alloc-concurrency") || !strings.Contains(lines[0], "1 to 256") {
			t.Errorf("tms %q %q: stderr %q, want one line naming --alloc-concurrency and 1 to 256", tc.env, tc.args, p.stderrText())
		}
	}
}
