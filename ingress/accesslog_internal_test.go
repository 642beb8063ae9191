package ingress

import (
	"testing"
	"time"

	"tms/ops/testkit"
)

// TestSamplerOneLinePerPeriod: a hot route gets one info line a period,
// which says how many answers went to debug since the one before; routes
// are sampled apart.
func TestSamplerOneLinePerPeriod(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newSampler(time.Second, clock.Now)
	if ok, held := s.admit("/create_ticket"); !ok || held != 0 {
		t.Fatalf("first answer: %v %d, want its line", ok, held)
	}
	for i := range 5 {
		clock.Advance(100 * time.Millisecond)
		if ok, _ := s.admit("/create_ticket"); ok {
			t.Fatalf("answer %d within the period got a line", i+2)
		}
	}
	if ok, held := s.admit("/cancel_ticket"); !ok || held != 0 {
		t.Errorf("another route's first answer: %v %d, want its line", ok, held)
	}
	clock.Advance(500 * time.Millisecond)
	if ok, held := s.admit("/create_ticket"); !ok || held != 5 {
		t.Errorf("first answer of the next period: %v %d, want its line standing for 5 more", ok, held)
	}
	if ok, _ := s.admit("/create_ticket"); ok {
		t.Error("second answer of the new period got a line")
	}
}
