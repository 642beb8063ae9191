package ingress

import (
	"testing"
	"time"

	"tms/subjects"
)

// idemTakeoverAfter is the age after which a pending record's twin is
// presumed dead under the ETA timeout etaTimeout: the admission service
// works to subjects.DefaultBudget with that ETA (pinned by admission's
// TestTimingBudget).
func idemTakeoverAfter(etaTimeout time.Duration) time.Duration {
	return subjects.DefaultBudget.WithETA(etaTimeout).IdempotencyTakeover()
}

// TestTimingBudget pins the ingress to subjects.DefaultBudget:
// callTimeout is the budget's Call, so raising one without the other
// fails here. The admission service's own bounds are pinned in its
// package.
func TestTimingBudget(t *testing.T) {
	if callTimeout != subjects.DefaultBudget.Call {
		t.Errorf("callTimeout %s, budget's Call %s: declare one from the other", callTimeout, subjects.DefaultBudget.Call)
	}
}
