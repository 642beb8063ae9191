package workers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/workers/calendar"
)

// watchSink is what one watch feeds: a snapshot (every current value,
// built until the watch's nil marker) replaces the state it covers; live
// updates are applied one by one.
type watchSink struct {
	bucket   string
	snapshot func(entries []jetstream.KeyValueEntry)
	update   func(e jetstream.KeyValueEntry)
	loaded   *atomic.Bool
}

var errWatchEnded = errors.New("watch ended")

// watchLoop keeps one watch running until ctx is done. A watch that ends
// (its channel closes: nats.go issue 1777) or a reconnect to the server
// starts a new watch and a new snapshot; meanwhile the old state keeps
// answering, which is safe because the KV create decides, not the state.
func (r *Responder) watchLoop(ctx context.Context, kv jetstream.KeyValue, s watchSink) {
	nc := r.js.Conn()
	status := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(status)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		loaded, err := r.watchOnce(ctx, kv, s, status)
		if ctx.Err() != nil {
			return
		}
		if loaded {
			backoff = minBackoff
		}
		r.metrics.rebuild(s.bucket)
		r.log.Warn("kv watch ended, watching again", slog.String("bucket", s.bucket),
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

func (r *Responder) watchOnce(ctx context.Context, kv jetstream.KeyValue, s watchSink, status <-chan nats.Status) (loaded bool, err error) {
	// The library ends a watch when the context given to Watch ends, so
	// that context lives as long as the watch; a timer bounds the setup.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	setup := time.AfterFunc(kvTimeout, cancel)
	w, err := kv.WatchAll(wctx)
	if !setup.Stop() && err == nil {
		err = errors.New("watch setup timed out")
		stopWatcher(w)
	}
	if err != nil {
		return false, err
	}
	defer stopWatcher(w)
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
					s.snapshot(fresh)
					fresh, loaded = nil, true
					s.loaded.Store(true)
				}
			case !loaded:
				fresh = append(fresh, e)
			default:
				s.update(e)
			}
		}
	}
}

// stopWatcher unsubscribes and drains the channel until the library closes
// it: an undrained watcher would leak the subscription's goroutine.
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

func isPut(e jetstream.KeyValueEntry) bool { return e.Operation() == jetstream.KeyValuePut }

// shardSink feeds the calendars of the tenants in one slot shard.
func (r *Responder) shardSink(shard int) watchSink {
	return watchSink{
		bucket: subjects.SlotBucket(shard),
		loaded: &r.loaded[shard],
		snapshot: func(entries []jetstream.KeyValueEntry) {
			by := make(map[string][]calendar.Entry)
			for _, e := range entries {
				tenant, agent, minute, err := subjects.ParseSlotKey(e.Key())
				if err != nil {
					continue
				}
				if isPut(e) {
					by[tenant] = append(by[tenant], calendar.Entry{
						Slot: calendar.Slot{Agent: agent, Minute: minute}, Rev: e.Revision()})
				} else if _, ok := by[tenant]; !ok {
					by[tenant] = nil
				}
			}
			for tenant := range by {
				r.calendar(tenant)
			}
			r.mu.Lock()
			var mine []string
			for tenant, tc := range r.tenants {
				if tc.shard == shard {
					mine = append(mine, tenant)
				}
			}
			r.mu.Unlock()
			for _, tenant := range mine {
				tc := r.calendar(tenant)
				tc.mu.Lock()
				tc.cal.LoadSlots(by[tenant])
				tc.mu.Unlock()
			}
		},
		update: func(e jetstream.KeyValueEntry) {
			tenant, agent, minute, err := subjects.ParseSlotKey(e.Key())
			if err != nil {
				r.log.Warn("ignoring a slot key that does not parse", slog.String("key", e.Key()))
				return
			}
			s := calendar.Slot{Agent: agent, Minute: minute}
			tc := r.calendar(tenant)
			tc.mu.Lock()
			if isPut(e) {
				tc.cal.Put(s, e.Revision())
			} else {
				tc.cal.Delete(s, e.Revision())
			}
			tc.mu.Unlock()
		},
	}
}

// agentSink feeds every tenant's agents from subjects.BucketAgents.
func (r *Responder) agentSink() watchSink {
	return watchSink{
		bucket: subjects.BucketAgents,
		loaded: &r.loaded[r.nShards],
		snapshot: func(entries []jetstream.KeyValueEntry) {
			by := make(map[string][]calendar.Agent)
			for _, e := range entries {
				if !isPut(e) {
					continue
				}
				if tenant, ag, ok := r.agentOf(e); ok {
					by[tenant] = append(by[tenant], ag)
				}
			}
			for tenant := range by {
				r.calendar(tenant)
			}
			r.mu.Lock()
			all := make(map[string]*tenantCalendar, len(r.tenants))
			for tenant, tc := range r.tenants {
				all[tenant] = tc
			}
			r.mu.Unlock()
			for tenant, tc := range all {
				tc.mu.Lock()
				tc.cal.LoadAgents(by[tenant])
				tc.mu.Unlock()
			}
		},
		update: func(e jetstream.KeyValueEntry) {
			var tenant string
			var ag calendar.Agent
			if isPut(e) {
				var ok bool
				if tenant, ag, ok = r.agentOf(e); !ok {
					return
				}
			} else {
				t, a, ok := agentKey(e.Key())
				if !ok {
					return
				}
				tenant, ag = t, calendar.Agent{ID: a}
			}
			tc := r.calendar(tenant)
			tc.mu.Lock()
			tc.cal.SetAgent(ag)
			tc.mu.Unlock()
		},
	}
}

func agentKey(key string) (tenant, agent string, ok bool) {
	tenant, agent, ok = strings.Cut(key, ".")
	return tenant, agent, ok && subjects.ValidID(tenant) == nil && subjects.ValidID(agent) == nil
}

// agentOf decodes an agent record. Anyone with access to the bucket can
// write it, so a record that disagrees with its key or carries an unknown
// status is ignored (logged), and an available agent without a start
// counts as unavailable.
func (r *Responder) agentOf(e jetstream.KeyValueEntry) (string, calendar.Agent, bool) {
	tenant, agent, ok := agentKey(e.Key())
	if !ok {
		r.log.Warn("ignoring an agent key that does not parse", slog.String("key", e.Key()))
		return "", calendar.Agent{}, false
	}
	var rec subjects.AgentRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Tenant != tenant || rec.ID != agent ||
		(rec.Status != subjects.AgentAvailable && rec.Status != subjects.AgentUnavailable) {
		r.log.Warn("ignoring an agent record that does not match its key", slog.String("key", e.Key()),
			slog.String("tenant", tenant), slog.Any("err", err))
		return "", calendar.Agent{}, false
	}
	ag := calendar.Agent{ID: agent}
	if rec.Status == subjects.AgentAvailable && rec.AvailableSince != nil {
		ag.Available, ag.Since = true, *rec.AvailableSince
	}
	return tenant, ag, true
}
