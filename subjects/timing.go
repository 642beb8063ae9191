package subjects

import (
	"errors"
	"fmt"
	"time"
)

// Budget is the timing budget of admission: the timeouts of the ingress's
// path to a ticket, and the bounds other parts derive from them. It is the
// one source of these values, so that raising one timeout moves every
// bound that depends on it instead of relying on a comment elsewhere:
//
//   - A request that claimed an Idempotency-Key works for at most
//     IdempotencyClaim (ETA + 4 x Publish + Call: the reserve, the publish,
//     and on a failed publish the look-ups and the cancel). A pending
//     claim older than IdempotencyTakeover (the claim, the release a
//     failing claimer still sends, one more ETA, and Skew) is presumed
//     dead and taken over by a retry (package ingress/admission).
//   - A responder waits at most AgentsWait for the agents revision a
//     request carries, less than ETA, so its 503 arrives before the
//     ingress gives up.
//
// DefaultBudget is what every tms process uses; admission.Config.ETATimeout
// may replace ETA (WithETA).
type Budget struct {
	// ETA bounds one request from an ingress to the ETA responders.
	ETA time.Duration
	// Publish bounds one read of a slot bucket (a ticket looked up by
	// its id) or one write of the idempotency bucket.
	Publish time.Duration
	// Call bounds every other NATS or Postgres call of an ordinary
	// ingress request.
	Call time.Duration
	// AgentsWait bounds how long a responder waits for the agents watch
	// to apply the revision a request carries.
	AgentsWait time.Duration
	// Skew covers delivery delays and clock skew between the ingress that
	// stamped an idempotency claim and the retry that judges its age.
	Skew time.Duration
}

// DefaultBudget is the timing budget of tms.
var DefaultBudget = Budget{
	ETA:        2 * time.Second,
	Publish:    3 * time.Second,
	Call:       5 * time.Second,
	AgentsWait: time.Second,
	Skew:       10 * time.Second,
}

// ErrBudget means a timing budget or a bound checked against it does not
// hold.
var ErrBudget = errors.New("timing budget")

// WithETA is b with ETA d; d <= 0 keeps b's.
func (b Budget) WithETA(d time.Duration) Budget {
	if d > 0 {
		b.ETA = d
	}
	return b
}

// IdempotencyClaim bounds the work of the request that claimed an
// Idempotency-Key: the reserve, the publish, and on a failed publish the
// look-ups and the cancel.
func (b Budget) IdempotencyClaim() time.Duration { return b.ETA + 4*b.Publish + b.Call }

// IdempotencyTakeover is the age after which a pending idempotency claim
// is presumed dead: its claim budget, then the release it may still send
// (one ETA, not cut short by the budget), then Skew.
func (b Budget) IdempotencyTakeover() time.Duration { return b.IdempotencyClaim() + b.ETA + b.Skew }

// Check reports a budget whose parts cannot work together.
func (b Budget) Check() error {
	switch {
	case b.ETA <= 0 || b.Publish <= 0 || b.Call <= 0 || b.AgentsWait <= 0 || b.Skew < 0:
		return fmt.Errorf("%w: ETA, Publish, Call and AgentsWait must be positive, Skew not negative", ErrBudget)
	case b.AgentsWait >= b.ETA:
		return fmt.Errorf("%w: agents wait %s must stay under the ETA timeout %s", ErrBudget, b.AgentsWait, b.ETA)
	}
	return nil
}
