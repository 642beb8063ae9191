package workers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
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

// watchLoop keeps one watch running until ctx is done (jskit.KVFeed:
// rebuilt after a broken watch or a reconnect). Meanwhile the old state
// keeps answering, which is safe because the revision-checked KV write
// decides, not the
// state.
func (r *Responder) watchLoop(ctx context.Context, kv jetstream.KeyValue, s watchSink) {
	feed := jskit.KVFeed{KV: kv, NC: r.js.Conn(), Logger: r.log,
		Snapshot: func(entries []jetstream.KeyValueEntry) {
			s.snapshot(entries)
			s.loaded.Store(true)
		},
		Update:    s.update,
		Restarted: func() { r.metrics.rebuild(s.bucket) },
	}
	feed.Run(ctx)
}

func isPut(e jetstream.KeyValueEntry) bool { return e.Operation() == jetstream.KeyValuePut }

// slotMark is what a slot bucket entry says of its minute. The record
// is decoded as every reader of a slot key does (anyone with access to
// the bucket can write one): a confirmed ticket is busy, a hold busy
// until its expiry, a released record free at its revision (a
// reservation there updates it). A record that does not decode keeps
// the minute busy: the calendar does not offer what it cannot read, and
// a write there would only be a guess. A delete or purge marker (nothing
// of tms writes one) frees the minute.
func slotMark(e jetstream.KeyValueEntry) calendar.Mark {
	if !isPut(e) {
		return calendar.Mark{State: calendar.Free}
	}
	rec, err := subjects.DecodeSlotRecord(e.Key(), e.Value(), subjects.CheckNames)
	if err != nil {
		return calendar.Mark{State: calendar.Busy}
	}
	return recordMark(rec)
}

// recordMark is what the calendar keeps of a decoded record: a ticket's
// with the last minute of its window, so that it can be moved inside it.
func recordMark(rec subjects.SlotRecord) calendar.Mark {
	switch rec.State {
	case subjects.SlotHeld:
		return calendar.Mark{State: calendar.Held, Until: *rec.HoldExpiresAt}
	case subjects.SlotReleased, subjects.SlotVacated:
		return calendar.Mark{State: calendar.Free}
	}
	_, last, _ := calendar.Window(rec.CreatedAt, rec.Type) // zero (not movable) for a type it does not know
	return calendar.Mark{State: calendar.Busy, Last: last}
}

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
				by[tenant] = append(by[tenant], calendar.Entry{
					Slot: calendar.Slot{Agent: agent, Minute: minute}, Rev: e.Revision(), Mark: slotMark(e)})
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
			tc := r.calendar(tenant)
			tc.mu.Lock()
			tc.cal.Set(calendar.Slot{Agent: agent, Minute: minute}, e.Revision(), slotMark(e))
			tc.mu.Unlock()
		},
	}
}

// agentSink feeds every tenant's agents from subjects.BucketAgents and
// advances r.agentsApplied once a change is in the calendars.
//
// The watch delivers the bucket's stream in order, so one revision says
// how far every calendar has got: after a live update, its revision; after
// a snapshot, the highest revision among its entries, delete and purge
// markers included. That is the bucket's last revision when the snapshot
// was taken, because the bucket keeps the last entry of every key (no
// TTL, markers kept), and the last message of a stream is always the last
// of its key.
func (r *Responder) agentSink() watchSink {
	return watchSink{
		bucket: subjects.BucketAgents,
		loaded: &r.loaded[r.nShards],
		snapshot: func(entries []jetstream.KeyValueEntry) {
			by := make(map[string][]calendar.Agent)
			var last uint64
			for _, e := range entries {
				last = max(last, e.Revision())
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
			r.agentsApplied.advance(last)
		},
		update: func(e jetstream.KeyValueEntry) {
			r.applyAgent(e)
			// An entry ignored as malformed is applied too: nothing
			// later in the stream depends on it.
			r.agentsApplied.advance(e.Revision())
		},
	}
}

// applyAgent applies one live change of subjects.BucketAgents.
func (r *Responder) applyAgent(e jetstream.KeyValueEntry) {
	var tenant string
	var ag calendar.Agent
	if isPut(e) {
		var ok bool
		if tenant, ag, ok = r.agentOf(e); !ok {
			return
		}
	} else {
		t, a, err := subjects.ParseAgentKey(e.Key())
		if err != nil {
			return
		}
		tenant, ag = t, calendar.Agent{ID: a}
	}
	tc := r.calendar(tenant)
	tc.mu.Lock()
	tc.cal.SetAgent(ag)
	tc.mu.Unlock()
}

// progress is a revision that only goes up, and a broadcast to those
// waiting for it to reach theirs: each advance closes the channel they
// wait on, which the next waiter makes anew (so an advance nobody waits
// for costs nothing). The zero value is ready.
type progress struct {
	mu      sync.Mutex
	rev     uint64
	changed chan struct{} // nil: nobody waits
	waiting int           // callers inside await, for tests
}

// advance raises the revision to rev (a lower one changes nothing).
func (p *progress) advance(rev uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rev <= p.rev {
		return
	}
	p.rev = rev
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// reached reports whether the revision is at least rev.
func (p *progress) reached(rev uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rev >= rev
}

// await waits until the revision is at least rev or ctx is done, and
// returns the revision it last saw.
func (p *progress) await(ctx context.Context, rev uint64) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting++
	defer func() { p.waiting-- }()
	for p.rev < rev {
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
			p.mu.Lock()
		case <-ctx.Done():
			p.mu.Lock()
			if p.rev >= rev {
				return p.rev, nil
			}
			return p.rev, ctx.Err()
		}
	}
	return p.rev, nil
}

// awaitAgents returns once the agents watch has applied req.AgentsRev, so
// that the tenant's calendar has every agent change up to the one the
// request must see; or, after r.agentsWait, an error: a 503 if that
// revision exists (the watch is behind), a 400 if the bucket has no such
// revision yet (the ingress sends only revisions of writes it saw
// acknowledged, so the request is forged, or the bucket was deleted and
// made anew under a running ingress).
func (r *Responder) awaitAgents(ctx context.Context, req subjects.ETARequest) error {
	if r.agentsApplied.reached(req.AgentsRev) {
		return nil
	}
	began := time.Now()
	wctx, cancel := context.WithTimeout(ctx, r.agentsWait)
	defer cancel()
	applied, err := r.agentsApplied.await(wctx, req.AgentsRev)
	waited := time.Since(began)
	if err != nil {
		r.metrics.waited(waitTimedOut, waited)
		if last, lerr := r.agentsLastRev(ctx); lerr == nil && req.AgentsRev > last {
			return &RequestError{Code: subjects.ETACodeInvalidField, Field: "agents_rev",
				Reason: fmt.Sprintf("no agent write has revision %d (the last is %d)", req.AgentsRev, last)}
		}
		return fmt.Errorf("tenant %s: the agents of this responder are at revision %d, the request needs %d "+
			"(the tenant's last agent change), not reached within %s: %w: %w",
			req.Tenant, applied, req.AgentsRev, r.agentsWait, ErrUnavailable, ErrAgentsBehind)
	}
	r.metrics.waited(waitApplied, waited)
	r.log.Debug("waited for the agents watch", slog.String("tenant", req.Tenant),
		slog.Uint64("agents_rev", req.AgentsRev), slog.Duration("waited", waited))
	return nil
}

// agentsLastRev is the agents bucket's last revision, asked of the server
// within r.agentsWait (the request has already waited that long).
func (r *Responder) agentsLastRev(ctx context.Context) (uint64, error) {
	sctx, cancel := context.WithTimeout(ctx, r.agentsWait)
	defer cancel()
	st, err := r.agents.Status(sctx)
	if err != nil {
		return 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return 0, fmt.Errorf("bucket %s: status without stream info", subjects.BucketAgents)
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// agentOf decodes an agent record. Anyone with access to the bucket can
// write it, so a record that disagrees with its key or carries an unknown
// status is ignored (logged), and an available agent without a start
// counts as unavailable.
func (r *Responder) agentOf(e jetstream.KeyValueEntry) (string, calendar.Agent, bool) {
	tenant, agent, err := subjects.ParseAgentKey(e.Key())
	if err != nil {
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
