package jskit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVFeed keeps a watch on a KV bucket running and feeds what it sees to a
// query model: the registry and session caches in tenants, the ETA
// responders' calendars in workers. A watch delivers every current value,
// then a nil marker, then live updates; Snapshot gets the values up to the
// marker at once (so the model can be rebuilt and swapped, never seen half
// loaded), Update each later change. A watch that ends (its channel closes, nats.go
// issue 1777) or a reconnect to the server starts a new watch and a new
// snapshot, with backoff; until it completes the old model keeps answering.
type KVFeed struct {
	KV     jetstream.KeyValue
	Filter string     // "": every key
	NC     *nats.Conn // reconnect detection; nil: none
	Logger *slog.Logger
	// Snapshot replaces the model with entries (deletes and purges
	// included); Update applies one live change.
	Snapshot func(entries []jetstream.KeyValueEntry)
	Update   func(e jetstream.KeyValueEntry)
	// Restarted, if set, is called each time a watch has ended and a new
	// one is about to start.
	Restarted func()
}

var errWatchEnded = errors.New("watch ended")

// watchSetupTimeout bounds the start of one watch: a watch whose setup
// hangs is given up and started again.
const watchSetupTimeout = 5 * time.Second

// Run feeds the model until ctx is done.
func (f *KVFeed) Run(ctx context.Context) {
	var status chan nats.Status
	if f.NC != nil {
		status = f.NC.StatusChanged(nats.CONNECTED)
		defer f.NC.RemoveStatusListener(status)
	}
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		loaded, err := f.watch(ctx, status)
		if ctx.Err() != nil {
			return
		}
		if loaded {
			backoff = minBackoff
		}
		if f.Restarted != nil {
			f.Restarted()
		}
		log.Warn("kv watch ended, watching again", slog.String("filter", f.filter()),
			slog.Duration("backoff", backoff), slog.Any("err", err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (f *KVFeed) filter() string {
	if f.Filter == "" {
		return f.KV.Bucket() + ".>"
	}
	return f.KV.Bucket() + "." + f.Filter
}

// watch runs one watch: snapshot, then live updates. loaded reports
// whether the snapshot completed.
func (f *KVFeed) watch(ctx context.Context, status <-chan nats.Status) (loaded bool, err error) {
	// The library ends a watch when the context given to Watch ends, so
	// that context lives as long as the watch; a timer bounds the setup.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	setup := time.AfterFunc(watchSetupTimeout, cancel)
	var w jetstream.KeyWatcher
	if f.Filter == "" {
		w, err = f.KV.WatchAll(wctx)
	} else {
		w, err = f.KV.Watch(wctx, f.Filter)
	}
	if !setup.Stop() && err == nil {
		err = errors.New("watch setup timed out")
		StopWatcher(w)
	}
	if err != nil {
		return false, fmt.Errorf("watching %s: %w", f.filter(), err)
	}
	defer StopWatcher(w)
	var fresh []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return loaded, nil
		case <-status:
			return loaded, errors.New("reconnected to NATS: rebuilding from a new snapshot")
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return loaded, errWatchEnded
			case e == nil:
				if !loaded {
					f.Snapshot(fresh)
					fresh, loaded = nil, true
				}
			case !loaded:
				fresh = append(fresh, e)
			default:
				f.Update(e)
			}
		}
	}
}

// StopWatcher unsubscribes and drains the channel until the library closes
// it: its callback blocks on a full channel while holding a lock, so an
// undrained watcher would leak the subscription's goroutine.
func StopWatcher(w jetstream.KeyWatcher) {
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
