package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
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

// Bounds of the background readiness probes: each answers within
// probeTimeout or counts as failed, and they run once per probeInterval
// whatever the rate of /readyz requests.
const (
	probeInterval = time.Second
	probeTimeout  = time.Second
)

// errNotProbed is a probe's result before its first run.
var errNotProbed = errors.New("not probed yet")

// Probes runs checks that cost a round trip (a request to the responders,
// a stream info) in the background, every second, and keeps their last
// results: a /readyz request only reads them, so load balancers that ask
// often add no load, and a slow dependency does not slow the answer.
type Probes struct {
	checks []Check
	last   []atomic.Pointer[error]
	every  time.Duration
}

// NewProbes returns the probes of checks; Run runs them.
func NewProbes(checks ...Check) *Probes {
	return &Probes{checks: checks, last: make([]atomic.Pointer[error], len(checks)), every: probeInterval}
}

// Checks are the probes' readiness checks, each the last result of its
// probe (failing until the first run).
func (p *Probes) Checks() []Check {
	out := make([]Check, len(p.checks))
	for i, c := range p.checks {
		out[i] = Check{Name: c.Name, Degrades: c.Degrades, Check: func(context.Context) error {
			if err := p.last[i].Load(); err != nil {
				return *err
			}
			return errNotProbed
		}}
	}
	return out
}

// Run probes at once and then every second until ctx is done; it returns
// nil.
func (p *Probes) Run(ctx context.Context) error {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for i, c := range p.checks {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				defer cancel()
				err := c.Check(pctx)
				p.last[i].Store(&err)
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// ETAResponders is a check (for Probes) that some ETA responder answers a
// ping now: without one every admission is a 503.
func ETAResponders(nc *nats.Conn) Check {
	req, _ := json.Marshal(subjects.ETARequest{Op: subjects.ETAPing, Tenant: subjects.PingTenant})
	return Check{Name: "eta responders", Check: func(ctx context.Context) error {
		msg, err := nc.RequestWithContext(ctx, subjects.ETA(subjects.PingTenant), req)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return errors.New("none is running (start tms worker or tms serve on this NATS)")
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("no answer to a ping within %s (all busy or unreachable)", probeTimeout)
		case err != nil:
			return fmt.Errorf("ping: %w", err)
		}
		var reply subjects.ETAReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Err() != nil {
			return fmt.Errorf("ping answered %q", msg.Data)
		}
		return nil
	}}
}

// StreamLeader is a check (for Probes) that stream name exists and has a
// leader, so that it takes writes: a cluster that lost the quorum of a
// stream's replicas leaves it without one.
func StreamLeader(js jetstream.JetStream, name string) Check {
	return Check{Name: "stream " + name, Check: func(ctx context.Context) error {
		st, err := js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return errors.New("does not exist yet")
		case errors.Is(err, context.DeadlineExceeded):
			// Only a stream leader answers stream info.
			return fmt.Errorf("no answer to stream info within %s: no leader (its replicas have no quorum?)", probeTimeout)
		case err != nil:
			return fmt.Errorf("stream info: %w", err)
		}
		if ci := st.CachedInfo().Cluster; ci == nil || ci.Leader == "" {
			return errors.New("no leader: its replicas have no quorum")
		}
		return nil
	}}
}
