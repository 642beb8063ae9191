package ingress

import (
	"testing"
	"time"

	"tms/subjects"
)

// idemTakeoverAfter is the age after which a pending record's twin is
// presumed dead under the ETA timeout etaTimeout, as a ticket service
// built with it judges.
func idemTakeoverAfter(etaTimeout time.Duration) time.Duration {
	return newTicketService(Config{ETATimeout: etaTimeout}, nil, time.Now, nil).budget.IdempotencyTakeover()
}

// TestTimingBudget pins the ingress to subjects.DefaultBudget: a ticket
// service takes its ETA and publish bounds from it (ETATimeout replacing
// the ETA), and callTimeout, which the claim budget counts for the cancel
// of a failed publish, is the budget's Call, so raising one without the
// other fails here rather than shortening the takeover bound.
func TestTimingBudget(t *testing.T) {
	if callTimeout != subjects.DefaultBudget.Call {
		t.Errorf("callTimeout %s, budget's Call %s: declare one from the other", callTimeout, subjects.DefaultBudget.Call)
	}
	if got := newTicketService(Config{}, nil, time.Now, nil).budget; got != subjects.DefaultBudget {
		t.Errorf("default ticket service budget %+v, want subjects.DefaultBudget %+v", got, subjects.DefaultBudget)
	}
	s := newTicketService(Config{ETATimeout: 7 * time.Second}, nil, time.Now, nil)
	if s.budget.ETA != 7*time.Second || s.budget.Publish != subjects.DefaultBudget.Publish {
		t.Errorf("ETATimeout 7s gives budget %+v", s.budget)
	}
	// The takeover bound moves with the configured ETA timeout: twice
	// (the claim's reserve and the release after it).
	if d := idemTakeoverAfter(7*time.Second) - idemTakeoverAfter(2*time.Second); d != 10*time.Second {
		t.Errorf("an ETA timeout 5s longer moves the takeover bound by %s, want 10s", d)
	}
}
