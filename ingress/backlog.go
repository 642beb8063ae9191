package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// backlogSampleTimeout bounds the reads of one sample (a consumer info,
// or a stream info, per shard).
const backlogSampleTimeout = time.Second

// backlog is the allocators' lag as last sampled, plus what this process
// had the responders write since: the slot records (tickets, holds,
// cancels) the allocators have not read yet, summed over the shards.
type backlog struct {
	js     jetstream.JetStream
	shards int // the slot buckets (0: subjects.DefaultSlotShards)
	max    int64
	every  time.Duration
	now    func() time.Time
	logger *slog.Logger

	mu       sync.Mutex
	count    int64
	at       time.Time // of the last sample; zero: never sampled
	sampling bool
}

// saturated reports whether the allocators are max records or more
// behind. One caller at a time refreshes a stale count, inside its own
// request (bounded by backlogSampleTimeout); the others go on with the
// count they have. A failed sample keeps the old count: if the slot
// streams cannot be read, the responders' writes fail and answer 503 on
// their own.
func (b *backlog) saturated(ctx context.Context) bool {
	now := b.now()
	b.mu.Lock()
	refresh := !b.sampling && (b.at.IsZero() || now.Sub(b.at) >= b.every)
	if refresh {
		b.sampling = true
	}
	n := b.count
	b.mu.Unlock()
	if !refresh {
		return n >= b.max
	}

	got, err := b.sample(ctx)
	b.mu.Lock()
	b.sampling = false
	b.at = now
	if err == nil {
		b.count = got
		n = got
	} else {
		n = b.count
	}
	b.mu.Unlock()
	if err != nil {
		b.logger.Warn("sampling the allocators' backlog", slog.Any("err", err))
	}
	return n >= b.max
}

// sample sums, over the shards, the records the allocators' consumer
// (subjects.AllocatorConsumer) has yet to deliver or to see acked. A shard
// whose consumer does not exist yet (no allocator has started) counts
// every record its stream holds: none has been read.
func (b *backlog) sample(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, backlogSampleTimeout)
	defer cancel()
	shards := b.shards
	if shards <= 0 {
		shards = subjects.DefaultSlotShards
	}
	var total uint64
	for i := range shards {
		n, err := b.lag(ctx, i)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return int64(min(total, uint64(1<<62))), nil
}

// lag is shard i's share of the backlog.
func (b *backlog) lag(ctx context.Context, shard int) (uint64, error) {
	stream := subjects.SlotStream(shard)
	c, err := b.js.Consumer(ctx, stream, subjects.AllocatorConsumer(shard))
	switch {
	case err == nil:
		info := c.CachedInfo()
		return info.NumPending + uint64(max(info.NumAckPending, 0)), nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, nil // no responder has written anything yet
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return 0, fmt.Errorf("reading consumer %s on %s: %w", subjects.AllocatorConsumer(shard), stream, err)
	}
	st, err := b.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", stream, err)
	}
	return st.CachedInfo().State.Msgs, nil
}

func (b *backlog) added() {
	b.mu.Lock()
	b.count++
	b.mu.Unlock()
}
