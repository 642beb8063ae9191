package main_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// TestWorkerOpsListener: tms worker answers /healthz, /readyz and
// /metrics on --ops-addr (its responder's and allocator's metrics, and
// the listener's own requests), and nothing else there.
func TestWorkerOpsListener(t *testing.T) {
	t.Parallel()
	ns := testkit.StartNATS(t)
	env := []string{"TMS_NATS_URL=" + ns.URL(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_LOG_FORMAT=json"}
	w := startTMS(t, env, "worker")
	addr := str(t, w.logEvent("listening"), "ops")
	// One summary line once the worker is ready: what runs, where.
	ready := w.logEvent("tms ready")
	if ready["roles"] != "back,ops" || ready["nats"] != ns.URL() {
		t.Errorf("tms ready line %v: want roles back,ops and nats %s", ready, ns.URL())
	}
	if l, ok := ready["listeners"].(map[string]any); !ok || l["ops"] != addr {
		t.Errorf("tms ready line %v: want listeners.ops %s", ready, addr)
	}
	if _, ok := ready["tenants"].(float64); !ok {
		t.Errorf("tms ready line %v: want a tenant count", ready)
	}
	ops := newAPI(t, addr)
	if code, body := ops.do(http.MethodGet, "/healthz", "", nil); code != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("GET /healthz: %d %v", code, body)
	}
	testkit.Eventually(t, 60*time.Second, func() bool {
		code, body := ops.do(http.MethodGet, "/readyz", "", nil)
		return code == http.StatusOK && (body["status"] == "ready" || body["status"] == "degraded")
	}, "the worker ready on its ops listener")
	if code, body := ops.do(http.MethodPost, "/create_ticket", "", map[string]string{}); code != http.StatusNotFound {
		t.Errorf("POST /create_ticket on the ops listener: %d %v, want 404 (no ticket API there)", code, body)
	}

	text := scrape(t, addr)
	for _, want := range []string{
		"tms_tickets_at_risk", // the responder's
		"tms_allocator_",      // the allocator's
		`tms_http_requests_total{code="200",listener="ops"`, // the listener's own
	} {
		if !strings.Contains(text, want) {
			t.Errorf("GET /metrics has no %s", want)
		}
	}
}

// TestServeReadyLine: tms serve logs one "tms ready" line naming every
// part it runs and both listeners, once /readyz passes.
func TestServeReadyLine(t *testing.T) {
	t.Parallel()
	p, addr := startDefaultServe(t)
	ready := p.logEvent("tms ready")
	l, _ := ready["listeners"].(map[string]any)
	if ready["roles"] != "front,back,embedded-nats" || ready["command"] != "serve" || l["public"] != addr || l["internal"] == nil {
		t.Errorf("tms ready line %v: want serve's roles and both listeners (public %s)", ready, addr)
	}
	if n, ok := ready["nats"].(string); !ok || !strings.HasPrefix(n, "embedded ") {
		t.Errorf("tms ready line %v: want the embedded NATS", ready)
	}
	// The allocators start consuming beside readiness (it does not wait
	// for them): their line comes, before or after the summary.
	if a := p.logEvent("allocator ready"); a["concurrency"] != float64(16) || a["concurrency_source"] != "flag" {
		t.Errorf("allocator ready line %v: want concurrency 16 from the flag", a)
	}
	// Each other part said it was ready, on a line of its own, before
	// the summary.
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]int{}
	for _, l := range p.lines {
		msg, _ := l["msg"].(string)
		if msg == "tms ready" {
			break
		}
		seen[msg]++
	}
	for msg, n := range map[string]int{
		"embedded NATS started": 1, "http listener serving": 2, "nats api serving": 1,
		"tenant registry ready": 1, "sessions ready": 1, "eta responder ready": 1,
	} {
		if seen[msg] != n {
			t.Errorf("%d lines %q before tms ready, want %d", seen[msg], msg, n)
		}
	}
}

// TestMetricsNamedInDocsExist: every metric the README and docs/ name is
// exposed by a fresh tms serve, before anything it counts has happened
// (one request made, so that the request metrics have a series).
func TestMetricsNamedInDocsExist(t *testing.T) {
	t.Parallel()
	_, addr := startDefaultServe(t)
	var docs []string
	for _, pattern := range []string{"../../README.md", "../../docs/*.md"} {
		files, err := filepath.Glob(pattern)
		if err != nil || len(files) == 0 {
			t.Fatalf("no docs at %s: %v", pattern, err)
		}
		docs = append(docs, files...)
	}
	named := map[string]string{}
	metricName := regexp.MustCompile(`\btms_[a-z0-9_]*[a-z0-9]\b`)
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range metricName.FindAllString(string(b), -1) {
			named[n] = filepath.Base(f)
		}
	}
	if len(named) < 5 {
		t.Fatalf("only %d metric names found in the docs: %v", len(named), named)
	}
	exposed := exposedMetrics(t, addr)
	for n, doc := range named {
		if !exposed[n] {
			t.Errorf("%s names %s, which a fresh tms serve does not expose", doc, n)
		}
	}
}

// scrape is the text a running tms serves at addr's /metrics (200).
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, text)
	}
	return string(text)
}

// exposedMetrics is the metric families a running tms serves at addr's
// /metrics, by the names of their # TYPE lines.
func exposedMetrics(t *testing.T, addr string) map[string]bool {
	t.Helper()
	exposed := map[string]bool{}
	for _, line := range strings.Split(scrape(t, addr), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exposed[strings.Fields(rest)[0]] = true
		}
	}
	return exposed
}
