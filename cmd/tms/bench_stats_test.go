package main

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tms/ops"
	"tms/ops/testkit"
)

// TestBenchPercentiles: nearest-rank percentiles of a known set, whatever
// order the latencies came in.
func TestBenchPercentiles(t *testing.T) {
	t.Parallel()
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	rand.Shuffle(len(lat), func(i, j int) { lat[i], lat[j] = lat[j], lat[i] })
	got := summarize(lat)
	want := latencySummary{Answered: 1000, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if got != want {
		t.Fatalf("summarize(1..1000ms) = %+v, want %+v", got, want)
	}
	if got := summarize([]time.Duration{7 * time.Millisecond}); got != (latencySummary{1, 7, 7, 7, 7, 7}) {
		t.Errorf("summarize(one) = %+v", got)
	}
	if got := summarize(nil); got != (latencySummary{}) {
		t.Errorf("summarize(none) = %+v", got)
	}
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]time.Duration{50: 5, 90: 9, 99: 10, 99.9: 10, 10: 1, 11: 2} {
		if got := percentile(ten, p); got != want {
			t.Errorf("percentile(1..10, %g) = %d, want %d", p, got, want)
		}
	}
}

// TestBenchSchedule: rate x duration requests, request i due at
// start + i/rate.
func TestBenchSchedule(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rate float64
		d    time.Duration
		want int
	}{{50, 2 * time.Second, 100}, {500, 5 * time.Second, 2500}, {0.5, 3 * time.Second, 1}, {3, time.Second, 3}, {1000, 10 * time.Millisecond, 10}, {0.1, time.Second, 0}} {
		if got := scheduledCount(c.rate, c.d); got != c.want {
			t.Errorf("scheduledCount(%g, %s) = %d, want %d", c.rate, c.d, got, c.want)
		}
	}
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		i    int
		rate float64
		want time.Duration
	}{{0, 50, 0}, {1, 50, 20 * time.Millisecond}, {99, 50, 1980 * time.Millisecond}, {1, 3, 333333333 * time.Nanosecond}, {2, 3, 666666667 * time.Nanosecond}, {3, 0.5, 6 * time.Second}} {
		if got := dueTime(start, c.i, c.rate).Sub(start); got != c.want {
			t.Errorf("dueTime(start, %d, %g) = start + %s, want + %s", c.i, c.rate, got, c.want)
		}
	}
}

// TestBenchLatencyFromDueTime: a request the generator sent late counts
// its lateness: the latency is from its due time, not from when it left.
// The clock moves only where the test moves it: request i leaves i ms
// after its due time (the scheduler woke late) and is answered 2 ms later.
func TestBenchLatencyFromDueTime(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	y := newTally(5)
	recorded := make(chan struct{}, 5)
	y.onRecord = func() { recorded <- struct{}{} }
	var sentAt []time.Time
	answered := 0
	r := &runner{
		now: clock.Now, maxInFlight: 10,
		waitUntil: func(ctx context.Context, due time.Time) error {
			// One request at a time, so the answers' clock is the test's.
			for ; answered < len(sentAt); answered++ {
				<-recorded
			}
			clock.Set(due.Add(time.Duration(len(sentAt)) * time.Millisecond))
			sentAt = append(sentAt, clock.Now())
			return nil
		},
		send: func(context.Context) (int, string, string, error) {
			clock.Advance(2 * time.Millisecond)
			return 201, "", "t1", nil
		},
	}
	start := clock.Now()
	ran := r.run(context.Background(), 10, 5, y)
	if ran != 500*time.Millisecond {
		t.Errorf("ran %s, want 500ms (5 requests at 10/s)", ran)
	}
	got := slices.Clone(y.latencies)
	slices.Sort(got)
	want := []time.Duration{2 * time.Millisecond, 3 * time.Millisecond, 4 * time.Millisecond, 5 * time.Millisecond, 6 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Fatalf("latencies %v, want %v (lateness + 2ms answer)", got, want)
	}
	for i, at := range sentAt {
		if due := start.Add(time.Duration(i) * 100 * time.Millisecond); at.Sub(due) != time.Duration(i)*time.Millisecond {
			t.Errorf("request %d left at due + %s", i, at.Sub(due))
		}
	}
	res := y.result(10, ran)
	if res.Scheduled != 5 || res.Sent != 5 || res.Accepted != 5 || res.AcceptedPS != 10 || res.LatencyMS.Max != 6 {
		t.Errorf("result %+v", res)
	}
}

// TestBenchDropsWhenFull: a request due while --max-in-flight requests
// are outstanding is not sent and counts as dropped, never delayed; the
// counts add up to what was scheduled.
func TestBenchDropsWhenFull(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	release := make(chan struct{})
	var calls int
	var mu sync.Mutex
	r := &runner{
		now: clock.Now, maxInFlight: 2,
		waitUntil: func(ctx context.Context, due time.Time) error { clock.Set(due); return nil },
		send: func(context.Context) (int, string, string, error) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			<-release
			if n == 1 {
				return 409, "sla_unavailable", "", nil
			}
			return 0, "", "", errors.New("connection reset")
		},
	}
	y := newTally(6)
	recorded := make(chan struct{}, 6)
	y.onRecord = func() { recorded <- struct{}{} }
	done := make(chan time.Duration)
	go func() { done <- r.run(context.Background(), 100, 6, y) }()
	// The first two hold both places; the four after them are dropped
	// at once, before anything is answered.
	for range 4 {
		<-recorded
	}
	close(release)
	<-done
	res := y.result(100, 60*time.Millisecond)
	if res.Scheduled != 6 || res.Sent != 2 || res.Dropped != 4 || res.Rejected != 1 || res.Errors != 1 || res.Accepted != 0 ||
		res.LatencyMS.Answered != 1 || res.ErrSample != "connection reset" {
		t.Fatalf("result %+v", res)
	}
	if sum := res.Accepted + res.Rejected + res.Other4xx + res.Status5xx + res.Errors + res.Dropped; sum != res.Scheduled {
		t.Fatalf("outcomes add up to %d, scheduled %d", sum, res.Scheduled)
	}
}

// TestBenchStopsWhenInterrupted: the end of the context stops the
// schedule; only the requests whose due time came are counted.
func TestBenchStopsWhenInterrupted(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	r := &runner{
		now: clock.Now, maxInFlight: 100,
		waitUntil: func(ctx context.Context, due time.Time) error {
			if n == 3 {
				cancel()
				return ctx.Err()
			}
			n++
			clock.Set(due)
			return nil
		},
		send: func(context.Context) (int, string, string, error) { return 503, "overloaded", "", nil },
	}
	y := newTally(10)
	ran := r.run(ctx, 10, 10, y)
	res := y.result(10, ran)
	if ran != 200*time.Millisecond || res.Scheduled != 3 || res.Status5xx != 3 || res.Answers["503 overloaded"] != 3 {
		t.Fatalf("ran %s, result %+v", ran, res)
	}
}

// TestBenchClassify: which answer counts as what.
func TestBenchClassify(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status int
		code   string
		want   outcome
	}{{201, "", outAccepted}, {409, "sla_unavailable", outRejected}, {409, "idempotency_key_in_use", outOther4xx},
		{429, "rate_limited", outOther4xx}, {401, "unauthorized", outOther4xx}, {503, "overloaded", outStatus5xx}, {500, "internal", outStatus5xx}} {
		if got := classify(c.status, c.code); got != c.want {
			t.Errorf("classify(%d, %q) = %d, want %d", c.status, c.code, got, c.want)
		}
	}
}

// TestBenchConfig: defaults, variables under TMS_BENCH_ (not the
// server's TMS_), the agents of a given tenant, and bad values named.
func TestBenchConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadBenchConfig(nil, env(map[string]string{"TMS_MAX_IN_FLIGHT": "7", "TMS_BENCH_DURATION": "3s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != defaultBenchURL || !slices.Equal(cfg.Rates, []float64{100}) || cfg.Duration != 3*time.Second || cfg.Type != "BRONZE" ||
		cfg.Agents != defaultBenchAgents || cfg.MaxInFlight != 256 || cfg.Timeout != 10*time.Second || !cfg.Cleanup || cfg.JSON ||
		cfg.Tenants != 1 || cfg.SetupTimeout != 0 || cfg.MetricsURL != "" {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = loadBenchConfig([]string{"--sweep", "500, 1000,2000", "--client-id", "c1", "--url", "http://127.0.0.1:9/"},
		env(map[string]string{"TMS_BENCH_PASSWORD": "secret pass"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Rates, []float64{500, 1000, 2000}) || cfg.Agents != 0 || cfg.Password != "secret pass" || cfg.URL != "http://127.0.0.1:9" {
		t.Fatalf("sweep with a tenant: %+v", cfg)
	}
	// The command line's --rate wins over TMS_BENCH_SWEEP, and --sweep
	// over TMS_BENCH_RATE.
	cfg, err = loadBenchConfig([]string{"--rate", "40"}, env(map[string]string{"TMS_BENCH_SWEEP": "1,2"}), io.Discard)
	if err != nil || !slices.Equal(cfg.Rates, []float64{40}) {
		t.Fatalf("--rate over TMS_BENCH_SWEEP: %+v, %v", cfg, err)
	}
	cfg, err = loadBenchConfig([]string{"--sweep", "5,6"}, env(map[string]string{"TMS_BENCH_RATE": "40"}), io.Discard)
	if err != nil || !slices.Equal(cfg.Rates, []float64{5, 6}) {
		t.Fatalf("--sweep over TMS_BENCH_RATE: %+v, %v", cfg, err)
	}
	cfg, err = loadBenchConfig([]string{"--client-id", "c1", "--password", "p", "--agents", "3"}, env(nil), io.Discard)
	if err != nil || cfg.Agents != 3 {
		t.Fatalf("--agents with --client-id: %+v, %v", cfg, err)
	}
	cfg, err = loadBenchConfig([]string{"--metrics-url", "http://127.0.0.1:8080/metrics"},
		env(map[string]string{"TMS_BENCH_TENANTS": "1000", "TMS_BENCH_SETUP_TIMEOUT": "12m"}), io.Discard)
	if err != nil || cfg.Tenants != 1000 || cfg.SetupTimeout != 12*time.Minute || cfg.MetricsURL != "http://127.0.0.1:8080/metrics" {
		t.Fatalf("--tenants from TMS_BENCH_TENANTS, --metrics-url: %+v, %v", cfg, err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--rate", "0"}, nil, "--rate"},
		{[]string{"--rate", "-5"}, nil, "--rate"},
		{[]string{"--rate", "NaN"}, nil, "--rate"},
		{[]string{"--rate", "10", "--sweep", "1,2"}, nil, "--sweep"},
		{nil, map[string]string{"TMS_BENCH_RATE": "10", "TMS_BENCH_SWEEP": "1,2"}, "--sweep"},
		{[]string{"--sweep", "1,x"}, nil, "--sweep"},
		{[]string{"--sweep", ""}, nil, "--sweep"},
		{[]string{"--duration", "1ms"}, nil, "--duration"},
		{[]string{"--rate", "0.5", "--duration", "1s"}, nil, "--duration"},
		{[]string{"--type", "PLATINUM"}, nil, "--type"},
		{[]string{"--type", "gold"}, nil, "--type"},
		{[]string{"--agents", "-1"}, nil, "--agents"},
		{[]string{"--client-id", "c1"}, nil, "--password"},
		{[]string{"--client-id", "c1", "--password", "p", "--tenants", "2"}, nil, "--tenants 2 with --client-id"},
		{[]string{"--client-id", "c1", "--password", "p"}, map[string]string{"TMS_BENCH_TENANTS": "3"}, "--tenants 3 with --client-id"},
		{[]string{"--tenants", "0"}, nil, "--tenants"},
		{[]string{"--tenants", "100001"}, nil, "--tenants"},
		{[]string{"--setup-timeout", "-1s"}, nil, "--setup-timeout"},
		{[]string{"--metrics-url", "localhost:8080/metrics"}, nil, "--metrics-url"},
		{[]string{"--metrics-url", "http:///metrics"}, nil, "--metrics-url"},
		{[]string{"--max-in-flight", "0"}, nil, "--max-in-flight"},
		{[]string{"--timeout", "0s"}, nil, "--timeout"},
		{[]string{"--url", "127.0.0.1:8080"}, nil, "--url"},
		{[]string{"--url", "http://127.0.0.1:8080/api"}, nil, "--url"},
		{[]string{"--bogus"}, nil, "-bogus"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{nil, map[string]string{"TMS_BENCH_RATE": "fast"}, "TMS_BENCH_RATE"},
	} {
		_, err := loadBenchConfig(c.args, env(c.env), io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tms bench %q %v: %v, want a usage error naming %s", c.args, c.env, err, c.want)
		}
	}
	var out strings.Builder
	if _, err := loadBenchConfig([]string{"-h"}, env(nil), &out); !errors.Is(err, errHelp) || !strings.Contains(out.String(), "TMS_BENCH_MAX_IN_FLIGHT") {
		t.Errorf("tms bench -h: %v, printed %q", err, out.String())
	}
	out.Reset()
	if err := help([]string{"bench"}, &out); !errors.Is(err, errHelp) || !strings.Contains(out.String(), "open-loop") || !strings.Contains(out.String(), "--sweep") {
		t.Errorf("tms help bench: %v, printed %q", err, out.String())
	}
}

// TestBenchMustRetriesShedRequests: a set-up or clean-up request the
// server shed (429, 503) is sent again after its Retry-After; any other
// refusal is final.
func TestBenchMustRetriesShedRequests(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.URL.Path]++
		n := calls[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/cancel_ticket" && n == 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"status":"error","error":"rate_limited","message":"over its fair share"}`)
		case r.URL.Path == "/cancel_ticket":
			io.WriteString(w, `{"status":"cancelled","ticket_id":"t1"}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"status":"error","error":"invalid_field","message":"no"}`)
		}
	}))
	defer srv.Close()
	b := newBenchClient(benchConfig{URL: srv.URL, MaxInFlight: 4, Timeout: 5 * time.Second})
	defer b.hc.CloseIdleConnections()
	ctx := context.Background()
	if a, err := b.must(ctx, http.StatusOK, http.MethodPost, "/cancel_ticket", map[string]string{"ticket_id": "t1"}); err != nil || a.body.TicketID != "t1" {
		t.Fatalf("cancel after a 429: %+v, %v", a, err)
	}
	if _, err := b.must(ctx, http.StatusOK, http.MethodPost, "/logout", map[string]string{}); err == nil || !strings.Contains(err.Error(), "400 invalid_field") {
		t.Fatalf("a 400: %v, want it reported", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["/cancel_ticket"] != 2 || calls["/logout"] != 1 {
		t.Fatalf("calls %v: want the 429 tried again once, the 400 not", calls)
	}
}

// TestBenchParseServerMetrics: the two gauges out of a text exposition as
// client_golang writes it, whatever surrounds them; look-alike names,
// labelled series and comments are not taken for them; a missing or
// malformed one is named.
func TestBenchParseServerMetrics(t *testing.T) {
	t.Parallel()
	const exposition = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 123
# HELP go_goroutines_max not the gauge
go_goroutines_max 999
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes_peak 7
process_resident_memory_bytes{pid="12"} 5
process_resident_memory_bytes 1.2345678e+08
process_resident_memory_bytes 3
tms_http_requests_total{code="201",listener="public",method="POST",route="/create_ticket"} 42
`
	got, err := parseServerMetrics(strings.NewReader(exposition))
	if err != nil || got != (serverMetrics{RSSBytes: 123456780, Goroutines: 123}) {
		t.Fatalf("parse: %+v, %v", got, err)
	}
	for _, c := range []struct {
		name, text string
		want       serverMetrics
		err        string // "" for none
	}{
		{"empty labels and a timestamp", "go_goroutines{} 7 1700000000000\n\tprocess_resident_memory_bytes   4096\n", serverMetrics{RSSBytes: 4096, Goroutines: 7}, ""},
		{"no process collector", "go_goroutines 7\n", serverMetrics{Goroutines: 7}, "no process_resident_memory_bytes"},
		{"no go collector", "process_resident_memory_bytes 4096\n", serverMetrics{RSSBytes: 4096}, "no go_goroutines"},
		{"only look-alikes", "# process_resident_memory_bytes 1\ngo_goroutines_total 3\nprocess_resident_memory_bytes{a=\"b\"} 9\n", serverMetrics{},
			"no process_resident_memory_bytes (is the process collector registered?) and no go_goroutines"},
		{"not a number", "go_goroutines many\n", serverMetrics{}, `go_goroutines: value "many"`},
		{"NaN", "process_resident_memory_bytes NaN\n", serverMetrics{}, "is not a count"},
		{"negative", "process_resident_memory_bytes -1\n", serverMetrics{}, "is not a count"},
		{"no value", "go_goroutines{}\n", serverMetrics{}, "malformed sample"},
		{"too many fields", "go_goroutines 1 2 3\n", serverMetrics{}, "malformed sample"},
		{"nothing", "", serverMetrics{}, "no process_resident_memory_bytes"},
	} {
		got, err := parseServerMetrics(strings.NewReader(c.text))
		if got != c.want || (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %+v, %v; want %+v, error %q", c.name, got, err, c.want, c.err)
		}
	}
}

// TestBenchScrape: --metrics-url read over HTTP from client_golang's own
// handler of a registry with the process collector (ops.NewMetrics, as
// tms serve has), and what goes wrong said in Error.
func TestBenchScrape(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(ops.NewMetrics(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	b := newBenchClient(benchConfig{URL: srv.URL, MaxInFlight: 4, Timeout: 5 * time.Second})
	defer b.hc.CloseIdleConnections()
	ctx := testkit.Context(t, 30*time.Second)
	if m := b.scrape(ctx, srv.URL+"/metrics"); m.Error != "" || m.RSSBytes <= 0 || m.Goroutines <= 0 {
		t.Fatalf("scrape of a registry with the process collector: %+v", m)
	}
	for path, want := range map[string]string{"/broken": "status 500", "/json": `Content-Type "application/json" is not the text exposition format`, "/missing": "status 404"} {
		if m := b.scrape(ctx, srv.URL+path); !strings.Contains(m.Error, "GET "+srv.URL+path+": "+want) || m.RSSBytes != 0 {
			t.Errorf("scrape of %s: %+v, want an error naming %q", path, m, want)
		}
	}
	if m := b.scrape(ctx, "http://127.0.0.1:1/metrics"); m.Error == "" {
		t.Errorf("scrape of nothing: %+v, want an error", m)
	}
}

// TestBenchSetupSummary: the create_account and login percentiles of the
// accounts object, and its text.
func TestBenchSetupSummary(t *testing.T) {
	t.Parallel()
	lat := []time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}
	got := summarizeSetup(lat)
	if got != (setupLatency{Count: 3, P50: 20, P90: 30, P99: 30, Max: 30}) {
		t.Fatalf("summarizeSetup = %+v", got)
	}
	if got.text() != "n=3  p50 20ms  p90 30ms  p99 30ms  max 30ms" || summarizeSetup(nil).text() != "n=0" {
		t.Errorf("text %q", got.text())
	}
	a := accountsResult{Tenants: 5, Opened: 3, AgentsPerTenant: 2, Agents: 6, DurationS: 1.5, CreateAccountMS: got, LoginMS: got,
		TimedOut: true, Server: &serverMetrics{RSSBytes: 3 << 20, Goroutines: 40}}
	text := strings.Join(a.textLines(), "\n")
	for _, want := range []string{"3 of 5 accounts opened", "create_account  n=3", "login           n=3", "on the 3 accounts opened", "RSS 3.0 MiB, 40 goroutines"} {
		if !strings.Contains(text, want) {
			t.Errorf("text %q lacks %q", text, want)
		}
	}
}
