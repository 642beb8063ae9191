package ingress

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
)

// The fair share's 429 names its policy with the share the tenant is
// held to (at least the 100 a second it never sheds), r=0 and t the
// Retry-After.
func TestFairShareRefusalNamesItsPolicy(t *testing.T) {
	t.Parallel()
	o, err := NewOverload(OverloadConfig{MaxBacklog: -1, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("NewOverload: %v", err)
	}
	ae := toAPIError(o.overShare())
	want := map[string]string{"Retry-After": "1", rateLimitPolicyField: `"fair_share";q=100;w=1`, rateLimitField: `"fair_share";r=0;t=1`}
	if ae.status != http.StatusTooManyRequests || len(ae.header) != len(want) {
		t.Fatalf("fair share refusal: %d %v", ae.status, ae.header)
	}
	for k, v := range want {
		if ae.header[k] != v {
			t.Errorf("%s: %q, want %q", k, ae.header[k], v)
		}
	}
	o.admit.mu.Lock()
	o.admit.level = 50 // per 100 ms interval
	o.admit.mu.Unlock()
	if got := toAPIError(o.overShare()).header[rateLimitPolicyField]; got != `"fair_share";q=500;w=1` {
		t.Errorf("a share of 50 per 100 ms: RateLimit-Policy %q", got)
	}
}

// The fields of an answer allowed cost the hot path (create_ticket under
// a tenant limit) two small allocations, the RateLimit member and its
// header slice (the policy is the precomputed one), beside the one the
// limit already made (rate.Limiter's Reservation).
func TestRateLimitFieldsAllocations(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	k := newKeyedLimiter(1e9, 1000, clock.Now).withPolicy(policyTenant)
	h := http.Header{}
	allocs := testing.AllocsPerRun(1000, func() {
		clear(h)
		addRateLimit(h, k.policyOf(), k.take("tenant"))
	})
	if allocs > 3 {
		t.Fatalf("%v allocations per answer, want at most 3", allocs)
	}
	if got := h.Get(rateLimitPolicyField); got != `"tenant";q=1000;w=1` {
		t.Fatalf("RateLimit-Policy %q", got)
	}
}
