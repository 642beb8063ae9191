package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"tms/ops/jskit"
	"tms/subjects"
	"tms/workers/calendar"
)

// ticketTypes are the ticket types in the order answers list them.
var ticketTypes = []string{subjects.Gold, subjects.Silver, subjects.Bronze}

// maxAtRiskListed bounds the tickets one at_risk or replan answer lists.
const maxAtRiskListed = 1000

// maxRescueBatch bounds the rescued tickets a replan writes in one atomic
// batch, and maxBatchWrites the writes of one batch (the server takes up
// to 1,000 messages in a batch by default).
const (
	maxRescueBatch = 64
	maxBatchWrites = 900
)

// errPlacementStale: a placement's calendar was behind KV (a record it
// meant to move or replace had changed); what was read is learnt, and the
// caller places again.
var errPlacementStale = errors.New("placement stale")

// Reasons of a move (label of tms_eta_moves).
const (
	moveAdmission = "admission"
	moveReplan    = "replan"
)

// headRecord builds the record written at a placement's first claim: the
// new ticket's or hold's (which takes the minute of the ticket rec0, moved
// to to), or the vacated record of a rescued ticket; with the mark the
// calendar keeps of it.
type headRecord func(rec0 subjects.SlotRecord, to calendar.Slot) (subjects.SlotRecord, calendar.Mark, error)

// writePlacement writes a placement with moves as one atomic batch in the
// tenant's shard stream: for i >= 1 the ticket at p.Claims[i-1] moves to
// p.Claims[i], and head's record takes p.Claims[0]. The batch is ordered
// from the last hop back to the head, so that in stream order a moved
// ticket's new record always precedes the record that takes its old
// minute (the allocators then never see a minute held twice). Every write
// is checked against the revision the calendar claimed, and the batch is
// stored whole or not at all: a KV get sees either the whole placement or
// none of it (a watch receives its records one by one). It returns the
// revisions in claim order. Every claim is ended here: Taken on success;
// otherwise Abandon, and on a lost race (errPlacementStale) what KV holds
// now is learnt.
func (r *Responder) writePlacement(ctx context.Context, tenant string, tc *tenantCalendar, p calendar.Placement,
	head headRecord) ([]uint64, error) {
	revs, err := r.writePlacements(ctx, tenant, tc, []calendar.Placement{p}, []headRecord{head})
	if err != nil {
		return nil, err
	}
	return revs[0], nil
}

// writePlacements is writePlacement for several placements at once (their
// claims are disjoint: each was claimed while the others were), in one
// atomic batch: a replan pays the batch's fixed cost once for many
// rescued tickets. One lost race refuses them all.
func (r *Responder) writePlacements(ctx context.Context, tenant string, tc *tenantCalendar, ps []calendar.Placement,
	heads []headRecord) ([][]uint64, error) {
	kv := r.shards[tc.shard]
	bucket := subjects.SlotBucket(tc.shard)
	abandon := func() {
		tc.mu.Lock()
		for _, p := range ps {
			for _, cl := range p.Claims {
				tc.cal.Abandon(cl)
			}
		}
		tc.mu.Unlock()
	}
	var writes []jskit.KVWrite
	marks := make([][]calendar.Mark, len(ps))
	moves := 0
	for k, p := range ps {
		n := len(p.Claims)
		moves += n - 1
		// The records of the tickets that move, at the revisions claimed.
		moving := make([]subjects.SlotRecord, n-1)
		for i := range moving {
			cl := p.Claims[i]
			key := subjects.SlotKey(tenant, cl.Agent, cl.Minute)
			kctx, cancel := context.WithTimeout(ctx, kvTimeout)
			e, err := kv.Get(kctx, key)
			cancel()
			if err != nil {
				abandon()
				return nil, fmt.Errorf("reading slot %s to move its ticket: %w: %w", key, ErrUnavailable, err)
			}
			rec, err := subjects.DecodeSlotRecord(key, e.Value(), subjects.CheckNames)
			if e.Revision() != cl.Rev || err != nil || rec.State != subjects.SlotConfirmed {
				abandon()
				r.learn(tenant, cl.Slot, e.Revision(), slotMark(e))
				return nil, errPlacementStale
			}
			moving[i] = rec
		}
		recs := make([]subjects.SlotRecord, n)
		marks[k] = make([]calendar.Mark, n)
		for i := n - 1; i >= 1; i-- {
			to := p.Claims[i]
			recs[i] = subjects.MovedRecord(moving[i-1], to.Agent, to.Minute, to.Rev)
			if i < n-1 {
				next := p.Claims[i+1]
				recs[i].Moved = &subjects.SlotMove{Ticket: moving[i].Ticket, Agent: next.Agent, SlotTime: next.Minute.UTC()}
			}
			marks[k][i] = recordMark(recs[i])
		}
		var err error
		recs[0], marks[k][0], err = heads[k](moving[0], p.Claims[1].Slot)
		if err != nil {
			abandon()
			return nil, err
		}
		for i := n - 1; i >= 0; i-- {
			cl := p.Claims[i]
			value, err := json.Marshal(recs[i])
			if err != nil {
				abandon()
				return nil, err
			}
			writes = append(writes, jskit.KVWrite{Key: subjects.SlotKey(tenant, cl.Agent, cl.Minute), Value: value, Prev: cl.Rev})
		}
	}
	if dl, ok := ctx.Value(deadlineKey{}).(time.Time); ok && !r.now().Before(dl) {
		abandon()
		return nil, fmt.Errorf("writing %d placements with %d moves: %w", len(ps), moves, ErrPastDeadline)
	}
	revs, err := r.writeBatch(ctx, bucket, writes)
	if err != nil {
		abandon()
		if jskit.CreateLost(err) {
			for _, p := range ps {
				r.relearnAll(ctx, tenant, tc, p)
			}
			return nil, errPlacementStale
		}
		return nil, fmt.Errorf("writing %d placements with %d moves: %w: %w", len(ps), moves, ErrUnavailable, err)
	}
	out := make([][]uint64, len(ps))
	tc.mu.Lock()
	j := 0
	for k, p := range ps {
		n := len(p.Claims)
		out[k] = make([]uint64, n)
		for i := n - 1; i >= 0; i-- {
			tc.cal.Taken(p.Claims[i], revs[j], marks[k][i])
			out[k][i] = revs[j]
			j++
		}
	}
	tc.mu.Unlock()
	return out, nil
}

// writeBatch writes an atomic batch, turning atomic publishing back on
// once if an update of the bucket turned it off.
func (r *Responder) writeBatch(ctx context.Context, bucket string, writes []jskit.KVWrite) ([]uint64, error) {
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	revs, err := jskit.WriteKVBatch(kctx, r.nc, bucket, writes)
	if !jskit.AtomicPublishDisabled(err) {
		return revs, err
	}
	if err := jskit.EnableAtomicPublish(kctx, r.js, jskit.KVStream(bucket)); err != nil {
		return nil, fmt.Errorf("enabling atomic publish on bucket %s: %w", bucket, err)
	}
	return jskit.WriteKVBatch(kctx, r.nc, bucket, writes)
}

// relearnAll reads every key of a placement whose batch lost a race and
// puts what it holds into the calendar (which write lost is not said).
func (r *Responder) relearnAll(ctx context.Context, tenant string, tc *tenantCalendar, p calendar.Placement) {
	kv := r.shards[tc.shard]
	for _, cl := range p.Claims {
		kctx, cancel := context.WithTimeout(ctx, kvTimeout)
		e, err := kv.Get(kctx, subjects.SlotKey(tenant, cl.Agent, cl.Minute))
		cancel()
		if err == nil {
			r.learn(tenant, cl.Slot, e.Revision(), slotMark(e))
		}
	}
}

// capacity answers how many more tickets of each type the tenant could
// admit now, by the test a reserve uses, and where the next would go.
func (r *Responder) capacity(req subjects.ETARequest, now time.Time) subjects.ETAReply {
	tc := r.calendar(req.Tenant)
	reply := subjects.ETAReply{Code: subjects.ETAOK}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, typ := range ticketTypes {
		first, last, _ := calendar.Window(req.CreatedAt, typ)
		n, p := tc.cal.Capacity(now, first, last)
		c := subjects.TypeCapacity{Type: typ, Available: n}
		if n > 0 && len(p.Claims) > 0 {
			c.Agent, c.SlotTime, c.Moves = p.Claims[0].Agent, p.Claims[0].Minute, p.Moves()
		}
		reply.Capacity = append(reply.Capacity, c)
	}
	return reply
}

// fits lists the ticket types the tenant could admit now: what a refused
// reserve or hold tells its asker.
func (r *Responder) fits(req subjects.ETARequest) []string {
	out := []string{}
	for _, c := range r.capacity(req, r.now()).Capacity {
		if c.Available > 0 {
			out = append(out, c.Type)
		}
	}
	return out
}

// replan moves the tenant's tickets off agents that are no longer
// available, each onto an available agent inside its own window (with
// the fewest moves of other tickets, never into or out of the frozen
// horizon), one atomic batch per rescued ticket. The tickets no schedule
// can save stay where they are and are answered (and published) as at
// risk. Repeating it moves nothing twice: only tickets still on absent
// agents are looked at.
func (r *Responder) replan(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	tc := r.calendar(req.Tenant)
	moved := 0
	lost := map[calendar.Slot]bool{}
	// Rescues go out maxRescueBatch at a time; after a lost race, one at
	// a time until a batch lands again.
	batch := maxRescueBatch
	for round := 0; round < maxAttempts; round++ {
		tc.mu.Lock()
		stranded := tc.cal.Stranded(now)
		var ps []calendar.Placement
		writes := 0
		for _, s := range stranded {
			if len(ps) == batch || writes > maxBatchWrites-64 {
				break
			}
			if lost[s.Slot] {
				continue
			}
			p, ok := tc.cal.Rescue(now, s.Slot)
			if !ok {
				lost[s.Slot] = true
				continue
			}
			ps = append(ps, p)
			writes += len(p.Claims)
		}
		tc.mu.Unlock()
		if len(ps) == 0 {
			break
		}
		heads := make([]headRecord, len(ps))
		for k, p := range ps {
			// A rescued ticket's minute is left vacated, pointing where
			// it went.
			heads[k] = func(rec0 subjects.SlotRecord, to calendar.Slot) (subjects.SlotRecord, calendar.Mark, error) {
				return subjects.VacatedRecord(rec0, to.Agent, to.Minute, p.Claims[0].Rev), calendar.Mark{State: calendar.Free}, nil
			}
		}
		_, err := r.writePlacements(ctx, req.Tenant, tc, ps, heads)
		switch {
		case err == nil:
			moved += len(ps)
			batch = maxRescueBatch
			for _, p := range ps {
				r.metrics.moved(moveReplan, p.Moves())
			}
		case errors.Is(err, errPlacementStale):
			r.metrics.conflict()
			batch = 1
		default:
			return subjects.ETAReply{}, err
		}
	}
	tc.mu.Lock()
	var risky []calendar.Stranded
	for _, s := range tc.cal.Stranded(now) {
		if lost[s.Slot] {
			risky = append(risky, s)
		}
	}
	tc.mu.Unlock()
	atRisk, err := r.readAtRisk(ctx, req.Tenant, tc, risky)
	if err != nil {
		return subjects.ETAReply{}, err
	}
	for _, t := range atRisk {
		r.publishAtRisk(req.Tenant, t, now)
	}
	r.log.Info("replan done", slog.String("tenant", req.Tenant), slog.Int("moved", moved), slog.Int("at_risk", len(atRisk)))
	return subjects.ETAReply{Code: subjects.ETAOK, Moved: moved, AtRisk: atRisk}, nil
}

// atRisk lists the tenant's tickets on agents no longer available, still
// to be served: those a replan could not save, or that no replan has
// looked at yet.
func (r *Responder) atRisk(ctx context.Context, req subjects.ETARequest, now time.Time) (subjects.ETAReply, error) {
	tc := r.calendar(req.Tenant)
	tc.mu.Lock()
	stranded := tc.cal.Stranded(now)
	tc.mu.Unlock()
	list, err := r.readAtRisk(ctx, req.Tenant, tc, stranded)
	if err != nil {
		return subjects.ETAReply{}, err
	}
	return subjects.ETAReply{Code: subjects.ETAOK, AtRisk: list}, nil
}

// readAtRisk reads the tickets of stranded slots (at most
// maxAtRiskListed); a key that holds no ticket any more is left out.
func (r *Responder) readAtRisk(ctx context.Context, tenant string, tc *tenantCalendar, stranded []calendar.Stranded) ([]subjects.AtRiskTicket, error) {
	kv := r.shards[tc.shard]
	out := []subjects.AtRiskTicket{}
	for _, s := range stranded {
		if len(out) == maxAtRiskListed {
			break
		}
		key := subjects.SlotKey(tenant, s.Agent, s.Minute)
		kctx, cancel := context.WithTimeout(ctx, kvTimeout)
		e, err := kv.Get(kctx, key)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("reading slot %s: %w: %w", key, ErrUnavailable, err)
		}
		rec, err := subjects.DecodeSlotRecord(key, e.Value(), subjects.CheckNames)
		if err != nil || rec.State != subjects.SlotConfirmed {
			continue
		}
		out = append(out, subjects.AtRiskTicket{Ticket: rec.Ticket, Type: rec.Type, Agent: rec.Agent,
			SlotTime: rec.SlotTime, Deadline: rec.Deadline})
	}
	return out, nil
}

// publishAtRisk sends an at-risk event (core NATS, at most once here; a
// later replan sends it again while the ticket stays at risk).
func (r *Responder) publishAtRisk(tenant string, t subjects.AtRiskTicket, now time.Time) {
	publishEvent(r.nc, r.log, tenant, subjects.EventAtRisk, t.Ticket,
		subjects.AtRiskEvent{Event: subjects.EventAtRisk, Tenant: tenant, AtRiskTicket: t, At: now.UTC()})
}
