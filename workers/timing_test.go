package workers

import (
	"testing"

	"tms/subjects"
)

// TestDefaultReconcileGraceCoversBudget: the reconciler's default grace is
// one cmd/tms accepts, above subjects.DefaultBudget's reserve-to-publish
// bound with its doubling, so a timeout raised in the budget past it fails
// here before a reconciler frees a live reservation.
func TestDefaultReconcileGraceCoversBudget(t *testing.T) {
	b := subjects.DefaultBudget
	if err := b.CheckReconcileGrace(DefaultReconcileGrace); err != nil {
		t.Errorf("DefaultReconcileGrace %s: %v", DefaultReconcileGrace, err)
	}
	if DefaultReconcileGrace < 2*b.ReservePublishBound() {
		t.Errorf("DefaultReconcileGrace %s under twice the reserve-to-publish bound %s", DefaultReconcileGrace, b.ReservePublishBound())
	}
	if err := b.Check(); err != nil {
		t.Errorf("the responders' agents wait %s against the ingress's ETA timeout %s: %v", b.AgentsWait, b.ETA, err)
	}
}
