package workers

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
)

// Live concurrency. Every allocator process watches
// subjects.KeyAllocatorSettings in subjects.BucketOps (written by
// `tms ops workers scale`): a valid value sets how many tenant batches
// the process writes at once, without a restart; a delete or purge goes
// back to its own Concurrency (--alloc-concurrency); a value that does
// not decode or is out of bounds is logged and ignored. A rise starts
// more drainers at once; a fall lets drainers finish the batch they hold
// and stop, so no record in flight is dropped or written twice (a record
// is settled by the drainer that took it, whatever the concurrency
// becomes). The bound on the records pulled and not settled
// (concurrency x BatchSize) follows: a fall lets the records in flight
// settle before more are pulled.

// concurrencyState is the concurrency in force and where it came from.
type concurrencyState struct {
	n      int
	source string // subjects.ConcurrencyFrom*
	rev    uint64 // the BucketOps revision applied, 0 for the flag
}

// flightLimit bounds the records pulled and not yet settled; its limit
// can change while records are in flight (a fall only holds back the
// next pulls).
type flightLimit struct {
	mu       sync.Mutex
	n, limit int
	// wake is closed (and replaced) when a waiter may go on: a record
	// settled or the limit raised.
	wake    chan struct{}
	waiting int
}

func newFlightLimit(limit int) *flightLimit {
	return &flightLimit{limit: limit, wake: make(chan struct{})}
}

// acquire takes a place, waiting for one; false when ctx ended first.
func (l *flightLimit) acquire(ctx context.Context) bool {
	for {
		l.mu.Lock()
		if l.n < l.limit {
			l.n++
			l.mu.Unlock()
			return true
		}
		l.waiting++
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			l.mu.Lock()
			l.waiting--
			l.mu.Unlock()
			return false
		}
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}
}

// release gives a place back.
func (l *flightLimit) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	l.wakeLocked()
}

// setLimit changes the bound; the places taken stay taken.
func (l *flightLimit) setLimit(limit int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit = limit
	l.wakeLocked()
}

func (l *flightLimit) wakeLocked() {
	if l.waiting > 0 {
		close(l.wake)
		l.wake = make(chan struct{})
	}
}

// inFlight is the places taken.
func (l *flightLimit) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// drainers is the pool of goroutines that write the ready tenant
// queues; its size follows the concurrency.
type drainers struct {
	a   *Allocator
	ctx context.Context
	qs  *tenantQueues
	wg  sync.WaitGroup

	mu sync.Mutex
	// want is the drainers that will remain once those told to stop
	// have: the running ones less the tokens in stop.
	want int
	// stop holds one token per drainer to stop; a drainer takes one
	// between batches. Tokens never exceed the running drainers less
	// want, below MaxAllocConcurrency, so a send never blocks.
	stop   chan struct{}
	closed bool
}

func newDrainers(ctx context.Context, a *Allocator, qs *tenantQueues) *drainers {
	return &drainers{a: a, ctx: ctx, qs: qs, stop: make(chan struct{}, subjects.MaxAllocConcurrency)}
}

// set makes the pool n drainers: tokens not taken yet are taken back and
// new drainers started for a rise, tokens sent for a fall. Nothing once
// the pool is closed.
func (d *drainers) set(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for d.want > n {
		d.stop <- struct{}{}
		d.want--
	}
	for d.want < n {
		select {
		case <-d.stop: // a drainer told to stop that had not yet: it stays
		default:
			d.wg.Go(func() { d.a.drain(d.ctx, d.qs, d.stop) })
		}
		d.want++
	}
}

// close starts no drainer any more; wait then waits for those running
// (they end once the queues are closed and empty).
func (d *drainers) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
}

func (d *drainers) wait() { d.wg.Wait() }

// runState is what a running Run holds that a concurrency change acts on.
type runState struct {
	limit    *flightLimit
	drainers *drainers
}

// Concurrency is the concurrency in force, where it came from
// (subjects.ConcurrencyFrom*) and the BucketOps revision applied (0: the
// flag's).
func (a *Allocator) Concurrency() (n int, source string, revision uint64) {
	a.scaleMu.Lock()
	defer a.scaleMu.Unlock()
	return a.scale.n, a.scale.source, a.scale.rev
}

// setConcurrency puts s in force: in the running Run, if any, and in the
// next one. A change of value or source is logged.
func (a *Allocator) setConcurrency(s concurrencyState) {
	a.scaleMu.Lock()
	defer a.scaleMu.Unlock()
	old := a.scale
	a.scale = s
	if a.running != nil {
		a.running.limit.setLimit(s.n * a.batch)
		a.running.drainers.set(s.n)
	}
	a.m.concurrency(s.n)
	if old.n != s.n || old.source != s.source {
		a.log.Info("allocator concurrency changed", slog.Int("from", old.n), slog.Int("to", s.n),
			slog.String("source", s.source), slog.Uint64("revision", s.rev))
	}
}

// startRun records the state of a Run starting, and starts its drainers
// at the concurrency in force.
func (a *Allocator) startRun(rs *runState) {
	a.scaleMu.Lock()
	defer a.scaleMu.Unlock()
	a.running = rs
	rs.limit.setLimit(a.scale.n * a.batch)
	rs.drainers.set(a.scale.n)
}

// endRun forgets the Run's state: no change reaches its drainers any more.
func (a *Allocator) endRun() {
	a.scaleMu.Lock()
	defer a.scaleMu.Unlock()
	a.running.drainers.close()
	a.running = nil
}

// settingsEntry applies one entry of the settings key: a value, or its
// delete or purge.
func (a *Allocator) settingsEntry(e jetstream.KeyValueEntry) {
	if e.Key() != subjects.KeyAllocatorSettings {
		return
	}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		a.setConcurrency(concurrencyState{n: a.flagConc, source: subjects.ConcurrencyFromFlag})
		return
	}
	s, err := subjects.DecodeAllocatorSettings(e.Value())
	if err != nil {
		n, source, rev := a.Concurrency()
		a.log.Warn("allocator settings ignored; keeping the concurrency in force", slog.Uint64("revision", e.Revision()),
			slog.Int("concurrency", n), slog.String("source", source), slog.Uint64("applied_revision", rev),
			slog.Any("err", err))
		return
	}
	a.setConcurrency(concurrencyState{n: s.Concurrency, source: subjects.ConcurrencyFromOps, rev: e.Revision()})
}

// watchSettings follows the settings key until ctx is done; a watch that
// ends is started again (jskit.KVFeed, with its bounded backoff), the
// concurrency in force kept meanwhile.
func (a *Allocator) watchSettings(ctx context.Context) {
	feed := &jskit.KVFeed{KV: a.opsKV, Filter: subjects.KeyAllocatorSettings, NC: a.js.Conn(), Logger: a.log,
		Snapshot: func(entries []jetstream.KeyValueEntry) {
			if len(entries) == 0 {
				// Never written, or gone while the watch was down.
				a.setConcurrency(concurrencyState{n: a.flagConc, source: subjects.ConcurrencyFromFlag})
				return
			}
			a.settingsEntry(entries[len(entries)-1])
		},
		Update: a.settingsEntry,
	}
	feed.Run(ctx)
}
