package subjects

import (
	"errors"
	"testing"
	"time"
)

// TestDefaultBudget pins the values tms runs with and the bounds derived
// from them, and that they hold together.
func TestDefaultBudget(t *testing.T) {
	b := DefaultBudget
	if err := b.Check(); err != nil {
		t.Fatalf("DefaultBudget.Check: %v", err)
	}
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ETA", b.ETA, 2 * time.Second},
		{"Publish", b.Publish, 3 * time.Second},
		{"Call", b.Call, 5 * time.Second},
		{"AgentsWait", b.AgentsWait, time.Second},
		{"Skew", b.Skew, 10 * time.Second},
		{"ReservePublishBound", b.ReservePublishBound(), 5 * time.Second},
		{"MinReconcileGrace", b.MinReconcileGrace(), 10 * time.Second},
		{"IdempotencyClaim", b.IdempotencyClaim(), 19 * time.Second},
		{"IdempotencyTakeover", b.IdempotencyTakeover(), 31 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
	// The bounds the comments promise.
	if b.MinReconcileGrace() < 2*(b.ETA+b.Publish) {
		t.Errorf("MinReconcileGrace %s under twice ETA + Publish", b.MinReconcileGrace())
	}
	if b.IdempotencyTakeover() <= b.ETA+b.Publish+b.Call+b.ETA {
		t.Errorf("IdempotencyTakeover %s not above a reserve, a publish, a cancel and a release", b.IdempotencyTakeover())
	}
}

// TestBudgetBoundsMove raises each timeout in turn and checks that every
// bound depending on it moves by as much as that timeout counts in it, so
// a bound can neither forget a timeout nor stay put when one grows.
func TestBudgetBoundsMove(t *testing.T) {
	const d = 7 * time.Second
	bounds := []struct {
		name string
		of   func(Budget) time.Duration
	}{
		{"ReservePublishBound", Budget.ReservePublishBound},
		{"MinReconcileGrace", Budget.MinReconcileGrace},
		{"IdempotencyClaim", Budget.IdempotencyClaim},
		{"IdempotencyTakeover", Budget.IdempotencyTakeover},
	}
	// weight[timeout][bound]: how many times the bound counts the timeout.
	for _, c := range []struct {
		timeout string
		raise   func(*Budget)
		weight  []time.Duration
	}{
		{"ETA", func(b *Budget) { b.ETA += d }, []time.Duration{1, 2, 1, 2}},
		{"Publish", func(b *Budget) { b.Publish += d }, []time.Duration{1, 2, 4, 4}},
		{"Call", func(b *Budget) { b.Call += d }, []time.Duration{0, 0, 1, 1}},
		{"AgentsWait", func(b *Budget) { b.AgentsWait += d }, []time.Duration{0, 0, 0, 0}},
		{"Skew", func(b *Budget) { b.Skew += d }, []time.Duration{0, 0, 0, 1}},
	} {
		raised := DefaultBudget
		c.raise(&raised)
		for i, bound := range bounds {
			if got, want := bound.of(raised)-bound.of(DefaultBudget), c.weight[i]*d; got != want {
				t.Errorf("%s raised by %s moves %s by %s, want %s", c.timeout, d, bound.name, got, want)
			}
		}
	}
}

// TestBudgetChecks: a grace under the minimum, or a raised ETA or publish
// timeout that puts the minimum above a grace that was enough, is refused;
// so is an agents wait that outlasts the ETA timeout.
func TestBudgetChecks(t *testing.T) {
	b := DefaultBudget
	if err := b.CheckReconcileGrace(b.MinReconcileGrace()); err != nil {
		t.Errorf("grace at the minimum: %v", err)
	}
	if err := b.CheckReconcileGrace(b.MinReconcileGrace() - time.Millisecond); !errors.Is(err, ErrBudget) {
		t.Errorf("grace under the minimum: %v, want ErrBudget", err)
	}
	grace := 30 * time.Second
	slowPublish := b
	slowPublish.Publish = 14 * time.Second // 2 x (2 + 14) = 32 s
	if err := slowPublish.CheckReconcileGrace(grace); !errors.Is(err, ErrBudget) {
		t.Errorf("publish timeout 14s with grace 30s: %v, want ErrBudget", err)
	}
	if err := b.WithETA(14 * time.Second).CheckReconcileGrace(grace); !errors.Is(err, ErrBudget) {
		t.Errorf("ETA timeout 14s with grace 30s: %v, want ErrBudget", err)
	}
	if got := b.WithETA(0); got != b {
		t.Errorf("WithETA(0) = %+v, want the budget unchanged", got)
	}
	slowAgents := b
	slowAgents.AgentsWait = b.ETA
	if err := slowAgents.Check(); !errors.Is(err, ErrBudget) {
		t.Errorf("agents wait equal to the ETA timeout: %v, want ErrBudget", err)
	}
	if err := (Budget{}).Check(); !errors.Is(err, ErrBudget) {
		t.Errorf("zero budget: %v, want ErrBudget", err)
	}
}
