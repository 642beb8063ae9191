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

// backlogSampleTimeout bounds the one stream info request of a sample.
const backlogSampleTimeout = time.Second

// backlog is the TICKETS stream's message count as last sampled, plus
// what this process published since.
type backlog struct {
	js     jetstream.JetStream
	max    int64
	every  time.Duration
	now    func() time.Time
	logger *slog.Logger

	mu       sync.Mutex
	count    int64
	at       time.Time // of the last sample; zero: never sampled
	sampling bool
}

// saturated reports whether the stream holds max messages or more. One
// caller at a time refreshes a stale count, inside its own request (one
// stream info, bounded by backlogSampleTimeout); the others go on with the
// count they have. A failed sample keeps the old count: if the stream
// cannot be read, publishes fail and answer 503 on their own.
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
		b.logger.Warn("sampling the TICKETS backlog", slog.Any("err", err))
	}
	return n >= b.max
}

func (b *backlog) sample(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, backlogSampleTimeout)
	defer cancel()
	st, err := b.js.Stream(ctx, subjects.StreamTickets)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // no ticket published yet
	}
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", subjects.StreamTickets, err)
	}
	msgs := st.CachedInfo().State.Msgs
	return int64(min(msgs, uint64(1<<62))), nil
}

func (b *backlog) added() {
	b.mu.Lock()
	b.count++
	b.mu.Unlock()
}
