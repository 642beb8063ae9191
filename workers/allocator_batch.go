package workers

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// allocItem is one record pulled and not yet settled.
type allocItem struct {
	msg jetstream.Msg
	d   delivery
	// dec is decide's decision, then what the write's outcome made of it.
	dec decision
	// record labels the record in the metrics (recordInvalid when decide
	// refused it).
	record string
	log    *slog.Logger
	start  time.Time
	// stamp is when the slot record entered its slot stream (a parked
	// record's original's, from headerOriginalTime), for the allocation
	// latency.
	stamp time.Time
	// done stops the keep-alive and frees the item's place in flight.
	done func()
}

// received reads a message pulled from sh into an item for its tenant's
// queue; nil when it has no metadata (given back, to come again).
func (a *Allocator) received(sh *allocShard, msg jetstream.Msg, release func()) *allocItem {
	start := time.Now()
	md, err := msg.Metadata()
	if err != nil {
		a.log.Warn("record without metadata", slog.String("subject", msg.Subject()), slog.Any("err", err))
		_ = msg.NakWithDelay(a.backoff(1))
		return nil
	}
	if md.NumDelivered > 1 {
		a.m.redelivered()
	}
	stamp := md.Timestamp
	var dec decision
	var d delivery
	if sh.isParked() {
		stamp = originalTime(msg.Headers(), md.Timestamp)
		d = a.parkedDelivery(msg, md)
		dec = decideParked(d)
	} else {
		d = delivery{shard: sh.index, subject: msg.Subject(), header: msg.Headers(), data: msg.Data(),
			seq: md.Sequence.Stream, delivered: md.NumDelivered}
		dec = decide(d)
	}
	log := a.log.With(slog.String("subject", d.subject), slog.Uint64("seq", d.seq), slog.Uint64("delivery", d.delivered))
	if d.parked {
		log = log.With(slog.String("parked", d.parkedSubject))
	}
	if dec.tenant != "" {
		log = log.With(slog.String("tenant", dec.tenant))
	}
	if dec.ticket != "" {
		log = log.With(slog.String("ticket", dec.ticket))
	}
	record := dec.record
	if dec.action == actDeadLetter {
		record = recordInvalid
	}
	stop := a.keepAlive(msg)
	return &allocItem{msg: msg, d: d, dec: dec, record: record, log: log, start: start, stamp: stamp,
		done: func() { stop(); release() }}
}

// parkedDelivery is the delivery of a parked message: its original's
// subject, sequence and shard, from its headers.
func (a *Allocator) parkedDelivery(msg jetstream.Msg, md *jetstream.MsgMetadata) delivery {
	h := msg.Headers()
	d := delivery{shard: -1, subject: h.Get(subjects.HeaderOriginalSubject), header: h, data: msg.Data(),
		delivered: md.NumDelivered, parked: true, parkedSubject: msg.Subject(), parkedSeq: md.Sequence.Stream}
	d.seq, _ = strconv.ParseUint(h.Get(subjects.HeaderOriginalSequence), 10, 64)
	if bucket, _, err := subjects.ParseSlotSubject(d.subject); err == nil {
		for _, sh := range a.shards {
			if subjects.SlotBucket(sh.index) == bucket {
				d.shard = sh.index
			}
		}
	}
	return d
}

// tenantQueues holds the records pulled, one queue per tenant ("" for
// records whose key names none), and hands each queue with records to
// one drainer at a time: a tenant's records are written in the order
// they were pulled, and a tenant whose database is slow holds up one
// drainer only.
type tenantQueues struct {
	mu sync.Mutex
	// queues has a tenant's queue from its first record until a
	// drainer finds it empty.
	queues map[string]*tenantQueue
	// ready has each queue with records that no drainer holds, once.
	// Each has a record in flight, so it never fills: its capacity is
	// the most records in flight plus the drainers.
	ready  chan *tenantQueue
	closed bool
}

type tenantQueue struct {
	tenant string
	items  []*allocItem
	// more is signalled when a record is added, for a batch waiting to
	// fill.
	more chan struct{}
}

func newTenantQueues(capacity int) *tenantQueues {
	return &tenantQueues{queues: map[string]*tenantQueue{}, ready: make(chan *tenantQueue, capacity)}
}

// enqueue adds it to its tenant's queue.
func (qs *tenantQueues) enqueue(it *allocItem) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := qs.queues[it.dec.tenant]
	if q == nil {
		q = &tenantQueue{tenant: it.dec.tenant, items: []*allocItem{it}, more: make(chan struct{}, 1)}
		qs.queues[q.tenant] = q
		qs.ready <- q
		return
	}
	q.items = append(q.items, it)
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// take removes the next batch of q, a queue the caller drains: up to max
// records, waiting until max are there or wait has passed since the
// first arrived (no wait once the queues are closed).
func (qs *tenantQueues) take(q *tenantQueue, max int, wait time.Duration) []*allocItem {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var timer *time.Timer
	for len(q.items) < max && !qs.closed {
		left := wait - time.Since(q.items[0].start)
		if left <= 0 {
			break
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		qs.mu.Unlock()
		select {
		case <-q.more:
		case <-timer.C:
		}
		qs.mu.Lock()
	}
	if timer != nil {
		timer.Stop()
	}
	n := min(len(q.items), max)
	batch := slices.Clone(q.items[:n])
	q.items = slices.Delete(q.items, 0, n)
	return batch
}

// done gives q back after a batch: behind the other ready queues when it
// has records left, else forgotten.
func (qs *tenantQueues) done(q *tenantQueue) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if len(q.items) > 0 {
		qs.ready <- q
		return
	}
	delete(qs.queues, q.tenant)
	if qs.closed && len(qs.queues) == 0 {
		close(qs.ready)
	}
}

// close says no record comes any more: the drainers end once every
// queue is empty.
func (qs *tenantQueues) close() {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	qs.closed = true
	if len(qs.queues) == 0 {
		close(qs.ready)
	}
}

// drain writes and settles the batches of the ready queues until the
// queues are closed and empty, or until it takes a token from stop (the
// concurrency fell): between batches, never with one in hand.
func (a *Allocator) drain(ctx context.Context, qs *tenantQueues, stop <-chan struct{}) {
	for {
		// A stop first: after a fall, a drainer that finished its batch
		// must not take another while queues are ready.
		select {
		case <-stop:
			return
		default:
		}
		select {
		case <-stop:
			return
		case q, ok := <-qs.ready:
			if !ok {
				return
			}
			batch := qs.take(q, a.batch, a.batchWait)
			a.writing.Add(1)
			a.process(ctx, q.tenant, batch)
			a.writing.Add(-1)
			qs.done(q)
		}
	}
}

// writingNow is the tenant batches being written (and settled) now.
func (a *Allocator) writingNow() int { return int(a.writing.Load()) }

// process writes one batch of a tenant's records (see write) and settles
// each.
func (a *Allocator) process(ctx context.Context, tenant string, batch []*allocItem) {
	a.m.batched(len(batch))
	var writes []*allocItem
	for _, it := range batch {
		if it.dec.writes() {
			writes = append(writes, it)
		}
	}
	if len(writes) > 0 {
		a.write(ctx, tenant, writes)
	}
	a.settle(ctx, batch)
}
