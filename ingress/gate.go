package ingress

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// queueFactor bounds the callers waiting for a place of a gate to this
// many times its places: past that a wait would outlast QueueWait anyway.
const queueFactor = 16

// errGateFull: every place of a gate is taken and its queue is full, or
// the wait is over.
var errGateFull = errors.New("gate full")

// gate bounds how many callers are inside at once; a caller that finds
// every place taken waits its turn (first come, first served: a channel's
// blocked senders are served in order) up to wait, with at most
// queueFactor x places waiting. nil admits everyone.
type gate struct {
	places  chan struct{}
	wait    time.Duration
	queue   int64
	waiting atomic.Int64
}

// newGate bounds to n (0: def; negative: nil, no bound); callers wait up
// to wait for a place.
func newGate(n, def int, wait time.Duration) *gate {
	n = bound(n, def)
	if n == 0 {
		return nil
	}
	return &gate{places: make(chan struct{}, n), wait: wait, queue: int64(queueFactor * n)}
}

// enter takes a place, waiting for one if need be: errGateFull when none
// came in time, ctx's error when ctx ended first.
func (g *gate) enter(ctx context.Context) (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	select {
	case g.places <- struct{}{}:
		return g.leave, nil
	default:
	}
	if g.wait <= 0 {
		return nil, errGateFull
	}
	if g.waiting.Add(1) > g.queue {
		g.waiting.Add(-1)
		return nil, errGateFull
	}
	defer g.waiting.Add(-1)
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case g.places <- struct{}{}:
		return g.leave, nil
	case <-timer.C:
		return nil, errGateFull
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gate) leave() { <-g.places }
