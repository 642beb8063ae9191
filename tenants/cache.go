package tenants

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
)

// cache is the query side of a KV bucket: an in-memory map fed by a
// jskit.KVFeed on filter. Each snapshot is built into a fresh map and
// swapped in, so readers never see a half-loaded one; until a new snapshot
// completes the old map keeps answering.
type cache[V any] struct {
	kv     jetstream.KeyValue
	filter string
	// id maps a KV key to the map key; ok=false skips keys that do not
	// belong in the map.
	id     func(key string) (id string, ok bool)
	decode func(value []byte) (V, error)
	nc     *nats.Conn // nil: no reconnect detection
	log    *slog.Logger
	// what names the cache in its one "<what> ready" line, logged when
	// the first snapshot is loaded ("" : no line).
	what string

	mu       sync.RWMutex
	m        map[string]V
	lastRev  uint64 // highest revision applied to m
	ready    atomic.Bool
	restarts atomic.Int64 // watches restarted, for tests

	// started is made on first use (a cache is built as a literal) and
	// closed by the first snapshot, as ready is set.
	started               chan struct{}
	makeStarted, didStart sync.Once
}

// startedChan is closed once the first snapshot is loaded.
func (c *cache[V]) startedChan() chan struct{} {
	c.makeStarted.Do(func() { c.started = make(chan struct{}) })
	return c.started
}

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

// run keeps the cache fed until ctx is done.
func (c *cache[V]) run(ctx context.Context) error {
	feed := jskit.KVFeed{KV: c.kv, Filter: c.filter, NC: c.nc, Logger: c.log,
		Snapshot: c.load, Update: c.update, Restarted: func() { c.restarts.Add(1) }}
	feed.Run(ctx)
	return nil
}

// load builds a fresh map from a snapshot and swaps it in.
func (c *cache[V]) load(entries []jetstream.KeyValueEntry) {
	fresh := make(map[string]V, len(entries))
	var freshRev uint64
	for _, e := range entries {
		c.apply(fresh, e)
		freshRev = max(freshRev, e.Revision())
	}
	// Counted before the swap: from then on the watch's updates write
	// this map, under c.mu.
	n := len(fresh)
	c.mu.Lock()
	c.m, c.lastRev = fresh, max(freshRev, c.lastRev)
	c.mu.Unlock()
	c.ready.Store(true)
	c.didStart.Do(func() {
		close(c.startedChan())
		if c.what != "" {
			c.log.Info(c.what+" ready", slog.Int("entries", n), slog.Uint64("revision", freshRev))
		}
	})
}

// update applies one live change.
func (c *cache[V]) update(e jetstream.KeyValueEntry) {
	c.mu.Lock()
	c.apply(c.m, e)
	c.lastRev = max(c.lastRev, e.Revision())
	c.mu.Unlock()
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
