package workers

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
)

// natsTimeout bounds one JetStream API call whose caller set no deadline.
const natsTimeout = 10 * time.Second

// ensureTimeout bounds one call that opens or creates a stream, bucket or
// consumer, whatever the caller's deadline: on a cluster such a request
// is sometimes left unanswered (while another process creates the same
// stream), and the caller's retry, which reads first, does better than a
// long wait.
const ensureTimeout = 5 * time.Second

// withNATSDeadline gives ctx a deadline when it has none.
func withNATSDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, natsTimeout)
}

// EnsureStreams creates the allocators' dead-letter and parked streams,
// or updates them to the configuration in package subjects. The tickets
// themselves travel in the slot buckets' streams, which NewAllocator and
// the responders open. Every process that consumes tickets may call it, several at once;
// it is idempotent (jskit.EnsureStream).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, cfg := range []jetstream.StreamConfig{
		subjects.DeadLettersStreamConfig(replicas),
		subjects.ParkedStreamConfig(replicas),
	} {
		sctx, cancel := context.WithTimeout(ctx, ensureTimeout)
		_, err := jskit.EnsureStream(sctx, js, cfg)
		cancel()
		if err != nil {
			return fmt.Errorf("ensuring stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
