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

// TestRegisterAllStoresTheRegisteredCollectors: RegisterAll leaves in each
// variable the collector registered under its name, a second set of the
// same metrics reusing the first's, and stops at the first refusal,
// leaving the collectors after it unregistered.
func TestRegisterAllStoresTheRegisteredCollectors(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	counterOpts := prometheus.CounterOpts{Name: "tms_test_all_total", Help: "A test counter."}
	vecOpts := prometheus.CounterOpts{Name: "tms_test_all_by_x_total", Help: "A test counter by x."}
	c1, v1 := prometheus.NewCounter(counterOpts), prometheus.NewCounterVec(vecOpts, []string{"x"})
	first1, firstV := c1, v1
	if err := ops.RegisterAll(reg, ops.Collector(&c1), ops.Collector(&v1)); err != nil {
		t.Fatalf("first RegisterAll: %v", err)
	}
	if c1 != first1 || v1 != firstV {
		t.Fatalf("first RegisterAll replaced its own collectors")
	}
	c2, v2 := prometheus.NewCounter(counterOpts), prometheus.NewCounterVec(vecOpts, []string{"x"})
	if err := ops.RegisterAll(reg, ops.Collector(&c2), ops.Collector(&v2)); err != nil {
		t.Fatalf("second RegisterAll: %v", err)
	}
	if c2 != first1 || v2 != firstV {
		t.Fatalf("second RegisterAll left new collectors, want the registered ones")
	}

	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tms_test_all_gauge", Help: "A test gauge."})
	clash := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_test_all_total", Help: "Another help."}, []string{"y"})
	late := prometheus.NewCounter(prometheus.CounterOpts{Name: "tms_test_all_late_total", Help: "Never registered."})
	if err := ops.RegisterAll(reg, ops.Collector(&g), ops.Collector(&clash), ops.Collector(&late)); err == nil {
		t.Fatalf("RegisterAll with a different metric under a taken name: nil error")
	}
	if err := reg.Register(g); err == nil {
		t.Fatalf("the gauge before the refusal was not registered")
	}
	if err := reg.Register(late); err != nil {
		t.Fatalf("the counter after the refusal was registered: %v", err)
	}
}
