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
		{"IdempotencyClaim", b.IdempotencyClaim(), 19 * time.Second},
		{"IdempotencyTakeover", b.IdempotencyTakeover(), 31 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
	// The bounds the comments promise.
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
		{"IdempotencyClaim", Budget.IdempotencyClaim},
		{"IdempotencyTakeover", Budget.IdempotencyTakeover},
	}
	// weight[timeout][bound]: how many times the bound counts the timeout.
	for _, c := range []struct {
		timeout string
		raise   func(*Budget)
		weight  []time.Duration
	}{
		{"ETA", func(b *Budget) { b.ETA += d }, []time.Duration{1, 2}},
		{"Publish", func(b *Budget) { b.Publish += d }, []time.Duration{4, 4}},
		{"Call", func(b *Budget) { b.Call += d }, []time.Duration{1, 1}},
		{"AgentsWait", func(b *Budget) { b.AgentsWait += d }, []time.Duration{0, 0}},
		{"Skew", func(b *Budget) { b.Skew += d }, []time.Duration{0, 1}},
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

// TestBudgetChecks: WithETA keeps a budget for 0; an agents wait that
// outlasts the ETA timeout is refused.
func TestBudgetChecks(t *testing.T) {
	b := DefaultBudget
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
