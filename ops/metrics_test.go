package ops_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
)

// TestRegisterReusesTheRegisteredCollector: a second registration of the
// same metric returns the first collector, so both users count into one
// series; a different metric under a taken name is an error.
func TestRegisterReusesTheRegisteredCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "tms_test_total", Help: "A test counter."}
	first, err := ops.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatalf("first Register: %v", err)
	}
	second, err := ops.Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatalf("second Register: %v", err)
	}
	if second != first {
		t.Fatalf("second Register returned a new collector, want the registered one")
	}
	second.Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("gathered %v, want one counter at 1", families)
	}

	clash := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_test_total", Help: "Another help."}, []string{"x"})
	if _, err := ops.Register(reg, clash); err == nil {
		t.Fatalf("Register of a different metric under a taken name: nil error")
	}
}
