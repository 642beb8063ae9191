package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Check is one named readiness condition: nil when ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Readiness combines checks into one func for /readyz: nil when every check
// passes, else an error naming each failing check.
func Readiness(checks ...Check) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var failed []string
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				failed = append(failed, c.Name+": "+err.Error())
			}
		}
		if len(failed) == 0 {
			return nil
		}
		// One line, so that /readyz and the logs show it whole.
		return fmt.Errorf("%w: %s", ErrNotReady, strings.Join(failed, "; "))
	}
}

// Flag is a check that passes while ready() is true, e.g. a cache that has
// loaded its first snapshot.
func Flag(name string, ready func() bool) Check {
	return Check{Name: name, Check: func(context.Context) error {
		if !ready() {
			return errors.New("not loaded yet")
		}
		return nil
	}}
}

// NATSConnected is a check that passes while nc is connected.
func NATSConnected(nc *nats.Conn) Check {
	return Check{Name: "nats", Check: func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("connection %s", nc.Status())
		}
		return nil
	}}
}
