package main_test

import (
	"context"
	"net/http"
	"strconv"
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

// TestServeAnswersWorkersInfo: tms serve runs the allocators too, so it
// answers the workers' info request (on its embedded NATS) as a serve at
// the default concurrency, and exposes the workers' issue 11 metrics from
// the start.
func TestServeAnswersWorkersInfo(t *testing.T) {
	t.Parallel()
	p, addr := startDefaultServe(t)
	url := str(t, p.logEvent("embedded NATS started"), "nats_url")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	info := askWorkers(t, nc)
	if info.Command != "serve" || info.Concurrency != 16 || info.ConcurrencySource != subjects.ConcurrencyFromFlag {
		t.Errorf("serve's worker info %+v: want command serve at concurrency 16 from its flag", info)
	}

	text := scrape(t, addr)
	for _, want := range []string{
		"tms_allocator_concurrency 16", "tms_allocator_writing 0", "tms_allocator_redeliveries_total 0", "tms_dead_letters 0",
		`tms_allocator_allocation_latency_seconds_count{record="created"} 0`,
		`tms_allocator_allocation_latency_seconds_count{record="cancelled"} 0`,
		`tms_allocator_allocation_latency_seconds_count{record="moved"} 0`,
		`tms_tenant_db_errors_total{kind="unavailable"} 0`, `tms_tenant_db_errors_total{kind="timeout"} 0`,
		`tms_tenant_db_errors_total{kind="conflict"} 0`, `tms_tenant_db_errors_total{kind="constraint"} 0`,
		`tms_tenant_db_errors_total{kind="other"} 0`,
		`tms_allocator_backlog_records{consumer="slots-0"}`, `tms_allocator_backlog_records{consumer="parked"}`,
		`tms_allocator_oldest_unallocated_seconds{consumer="slots-0"}`,
		`tms_allocator_oldest_unallocated_seconds{consumer="parked"}`,
		"tms_eta_utilisation_ratio 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("serve's /metrics has no %s", want)
		}
	}
}

// sampleSum is the sum of the samples in a /metrics text of the series
// name{...} whose labels hold every one of labels (`k="v"` each).
func sampleSum(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(series, l)
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestMetricsDuringShortLoad: tms serve and a tms worker on its NATS,
// scraped after a short load: the front counts each create_ticket by type
// and outcome, and the allocators of both processes together count every
// ticket written once in the accepted-to-allocated latency and in what
// they settled, each on its own /metrics.
func TestMetricsDuringShortLoad(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve, pub, env := opsServe(t, prefix)
	serveAddr := str(t, serve.logEvent("listening"), "public")
	worker := startTMS(t, append(env, "TMS_LOG_FORMAT=json"), "worker")
	workerAddr := str(t, worker.logEvent("listening"), "ops")
	worker.logEvent("allocator ready")
	clientID, token, _ := account(t, pub)

	const n = 40
	var ids []string
	for i := range n {
		typ := []string{"BRONZE", "SILVER"}[i%2]
		ids = append(ids, str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token,
			map[string]any{"client_id": clientID, "ticket_type": typ}), "ticket_id"))
	}
	pub.must(http.StatusBadRequest, http.MethodPost, "/create_ticket", token, map[string]any{"client_id": clientID, "ticket_type": "PLATINUM"})
	for _, id := range ids {
		waitAllocated(t, pub, token, id)
	}

	front := scrape(t, serveAddr)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{`outcome="accepted"`, `type="BRONZE"`}, n / 2},
		{[]string{`outcome="accepted"`, `type="SILVER"`}, n / 2},
		{[]string{`outcome="accepted"`, `type="GOLD"`}, 0},
		{[]string{`outcome="invalid"`, `type="invalid"`}, 1},
	} {
		if got := sampleSum(t, front, "tms_admissions_total", c.labels...); got != c.want {
			t.Errorf("tms_admissions_total%v on serve: %v, want %v", c.labels, got, c.want)
		}
	}
	// The tickets were written by either process: the latency's count
	// over both is every ticket, once (the GETs above saw them all
	// allocated, and each is observed before its ack).
	testkit.Eventually(t, 30*time.Second, func() bool {
		back := scrape(t, workerAddr)
		front = scrape(t, serveAddr)
		written := sampleSum(t, front, "tms_allocator_allocation_latency_seconds_count", `record="created"`) +
			sampleSum(t, back, "tms_allocator_allocation_latency_seconds_count", `record="created"`)
		return written == n
	}, "every ticket counted once in the allocation latency of serve and worker together")
	back := scrape(t, workerAddr)
	for _, name := range []string{"tms_allocator_concurrency", "tms_allocator_backlog_records", "tms_eta_utilisation_ratio", "tms_dead_letters"} {
		if !strings.Contains(back, "\n"+name) {
			t.Errorf("the worker's /metrics has no %s", name)
		}
	}
	if got := sampleSum(t, back, "tms_dead_letters"); got != 0 {
		t.Errorf("tms_dead_letters on the worker: %v, want 0", got)
	}
	worker.stop()
	serve.stop()
}
