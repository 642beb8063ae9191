package main_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// alertRules is the part of a Prometheus rule file the test reads.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRulesNameExposedMetrics: ops/alerts/tms.rules.yml parses as a
// rule file, every rule is complete, the conditions that need a human are
// all covered, and every tms_* metric an expression names is exposed by
// a fresh tms serve after one request (a histogram by its family name,
// whatever the _bucket, _sum or _count suffix the expression reads).
func TestAlertRulesNameExposedMetrics(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../ops/alerts/tms.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("ops/alerts/tms.rules.yml: %v", err)
	}
	metricName := regexp.MustCompile(`\btms_[a-z0-9_]*[a-z0-9]\b`)
	named := map[string]string{} // metric -> the first alert naming it
	var exprs strings.Builder
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: want alert, expr, for, labels.severity and annotations.summary", r.Alert)
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			exprs.WriteString(r.Expr + "\n")
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				if _, ok := named[n]; !ok {
					named[n] = r.Alert
				}
			}
		}
	}
	// The conditions issue 11 asks a human to look at.
	for what, want := range map[string]string{
		"allocator lag":             "tms_allocator_oldest_unallocated_seconds",
		"dead letters":              "tms_dead_letters",
		"tenant database down":      "tms_allocator_tenants_down",
		"tenant database errors":    `tms_tenant_db_errors_total{kind=~"unavailable`,
		"readiness failing":         `route="/readyz", code="503"`,
		"HTTP 5xx":                  `tms_http_requests_total{code=~"5.."}`,
		"NATS API 5xx":              `tms_nats_api_requests_total{status=~"5.."}`,
		"under-replicated a stream": "nats_jetstream_stream_raft_peer_info",
	} {
		if !strings.Contains(exprs.String(), want) {
			t.Errorf("no alert on %s (no expression has %s)", what, want)
		}
	}

	_, addr := startDefaultServe(t)
	exposed := exposedMetrics(t, addr)
	for n, alert := range named {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && exposed[b] {
				base = b
			}
		}
		if !exposed[base] {
			t.Errorf("alert %s names %s, which a fresh tms serve does not expose", alert, n)
		}
	}
}
