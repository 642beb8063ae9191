package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Check is one named readiness condition: nil when ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
	// Degrades marks a check whose failure leaves the process doing its
	// main work, only worse: /readyz then says degraded and stays 200, so
	// a load balancer keeps routing to it. Postgres is one: tickets are
	// admitted in NATS and land when it is back.
	Degrades bool
}

// DegradedError is what Readiness returns when only checks that degrade
// fail. Its Degraded method lets a caller that must not import ops (the
// HTTP layer) tell it from a failure by behaviour, as net.Error's Timeout
// does; errors.Is(err, ErrDegraded) matches it too.
type DegradedError struct{ msg string }

func (e *DegradedError) Error() string { return e.msg }

// Degraded is always true: the process is ready, with this much wrong.
func (e *DegradedError) Degraded() bool { return true }

func (e *DegradedError) Unwrap() error { return ErrDegraded }

// Readiness combines checks into one func for /readyz: nil when every check
// passes; an error wrapping ErrNotReady when a required check fails (it
// names every failing check); else a *DegradedError naming the failing
// checks that only degrade.
func Readiness(checks ...Check) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var failed, degraded []string
		for _, c := range checks {
			err := c.Check(ctx)
			if err == nil {
				continue
			}
			// One line, so that /readyz and the logs show it whole.
			line := c.Name + ": " + strings.ReplaceAll(err.Error(), "\n", "; ")
			if c.Degrades {
				degraded = append(degraded, line)
			} else {
				failed = append(failed, line)
			}
		}
		switch {
		case len(failed) > 0:
			return fmt.Errorf("%w: %s", ErrNotReady, strings.Join(append(failed, degraded...), "; "))
		case len(degraded) > 0:
			return &DegradedError{msg: strings.Join(degraded, "; ")}
		}
		return nil
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

// Bounds of the Postgres readiness check: a probe must answer well inside
// its own timeout, and probes every second from several load balancers
// must not each open a connection.
const (
	postgresCheckTimeout = time.Second
	postgresCheckTTL     = time.Second
)

// PostgresReachable is a check that degrades: ping (the Provisioner's
// Ping: every tenant server accepts a connection) must answer within a
// second. Its result is kept for a second.
func PostgresReachable(ping func(ctx context.Context) error) Check {
	return Cached(Check{Name: "postgres", Degrades: true, Check: func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, postgresCheckTimeout)
		defer cancel()
		return ping(ctx)
	}}, postgresCheckTTL)
}

// Cached returns c with its result kept for ttl, so that frequent probes
// cost one real check per ttl. Concurrent callers wait for the one check
// in flight rather than starting their own.
func Cached(c Check, ttl time.Duration) Check {
	var (
		mu   sync.Mutex
		at   time.Time
		last error
	)
	inner := c.Check
	c.Check = func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < ttl {
			return last
		}
		last = inner(ctx)
		at = time.Now()
		return last
	}
	return c
}
