package tenants

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cache is the query side of a KV bucket: an in-memory map fed by a watch
// on filter. The watch delivers every current value, then a nil marker,
// then live updates; the cache builds a fresh map until the marker and
// swaps it in, so readers never see a half-loaded snapshot. A watch that
// ends (its channel closes, nats.go issue 1777) or a reconnect to the
// server starts a new watch and a new snapshot; until it is complete the
// old map keeps answering.
type cache[V any] struct {
	kv     jetstream.KeyValue
	filter string
	// id maps a KV key to the map key; ok=false skips keys that do not
	// belong in the map.
	id     func(key string) (id string, ok bool)
	decode func(value []byte) (V, error)
	nc     *nats.Conn // nil: no reconnect detection
	log    *slog.Logger

	mu      sync.RWMutex
	m       map[string]V
	lastRev uint64 // highest revision applied to m
	ready   atomic.Bool
	watches atomic.Int64 // watches started, for tests and logs
}

var errWatchEnded = errors.New("watch ended")

func (c *cache[V]) get(id string) (V, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[id]
	return v, ok
}

func (c *cache[V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// putLocal records this process's own write at revision rev, for
// read-your-writes, unless the watch has already moved past rev (then the
// map already holds rev or something newer, such as a delete).
func (c *cache[V]) putLocal(id string, v V, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.lastRev >= rev {
		return
	}
	c.m[id] = v
}

// deleteLocal drops id at once; the watch will deliver the same delete.
func (c *cache[V]) deleteLocal(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// run keeps the cache fed until ctx is done, re-watching with backoff.
func (c *cache[V]) run(ctx context.Context) error {
	var status chan nats.Status
	if c.nc != nil {
		status = c.nc.StatusChanged(nats.CONNECTED)
		defer c.nc.RemoveStatusListener(status)
	}
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		loaded, err := c.watch(ctx, status)
		if ctx.Err() != nil {
			return nil
		}
		if loaded {
			backoff = minBackoff
		}
		c.log.Warn("kv watch ended, watching again", slog.String("filter", c.filter),
			slog.Duration("backoff", backoff), slog.Any("err", err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// watch runs one watch: snapshot, swap, live updates. loaded reports
// whether the snapshot completed.
func (c *cache[V]) watch(ctx context.Context, status <-chan nats.Status) (loaded bool, err error) {
	// The library ends the watch when its context ends, so the context
	// lives as long as this watch; a timer bounds only the setup call.
	c.watches.Add(1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	setup := time.AfterFunc(kvTimeout, cancel)
	w, err := c.kv.Watch(wctx, c.filter)
	if !setup.Stop() && err == nil {
		err = errors.New("watch setup timed out")
		stopWatcher(w)
	}
	if err != nil {
		return false, natsErr("watching "+c.filter, err)
	}
	defer stopWatcher(w)
	fresh := make(map[string]V)
	var freshRev uint64
	for {
		select {
		case <-ctx.Done():
			return loaded, nil
		case <-status:
			return loaded, errors.New("reconnected to NATS: rebuilding from a new snapshot")
		case e, ok := <-w.Updates():
			if !ok {
				return loaded, errWatchEnded
			}
			if e == nil {
				if !loaded {
					c.mu.Lock()
					c.m, c.lastRev = fresh, max(freshRev, c.lastRev)
					c.mu.Unlock()
					loaded = true
					c.ready.Store(true)
				}
				continue
			}
			if !loaded {
				c.apply(fresh, e)
				freshRev = max(freshRev, e.Revision())
				continue
			}
			c.mu.Lock()
			c.apply(c.m, e)
			c.lastRev = max(c.lastRev, e.Revision())
			c.mu.Unlock()
		}
	}
}

func (c *cache[V]) apply(m map[string]V, e jetstream.KeyValueEntry) {
	id, ok := c.id(e.Key())
	if !ok {
		return
	}
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(m, id)
	default:
		v, err := c.decode(e.Value())
		if err != nil {
			c.log.Warn("skipping undecodable kv entry", slog.String("key", e.Key()), slog.Any("err", err))
			delete(m, id)
			return
		}
		m[id] = v
	}
}

// stopWatcher unsubscribes and drains the channel until the library closes
// it: its callback blocks on a full channel while holding a lock, so an
// undrained watcher would leak the subscription's goroutine.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}
