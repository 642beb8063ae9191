package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
)

// kvTimeout bounds one KV round trip made on behalf of a caller whose
// context has no earlier deadline.
const kvTimeout = 5 * time.Second

// openBucket opens the bucket with cfg (replicas, marker TTL), creating
// it if needed (jskit.OpenBucket). Every role calls it at start, so the
// first one creates it.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if js == nil {
		return nil, fmt.Errorf("bucket %s: nil JetStream", cfg.Bucket)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	cfg.History = 1
	cfg.Storage = jetstream.FileStorage
	// One KV round trip's bound, not more: on a cluster a create is
	// sometimes left unanswered while another process creates the same
	// bucket, and the caller's retry (which reads first) does better than
	// a long wait.
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	kv, err := jskit.OpenBucket(ctx, js, cfg)
	if err != nil {
		return nil, natsErr("opening bucket "+cfg.Bucket, err)
	}
	return kv, nil
}

// natsErr wraps a failed NATS call. Every error that is not one of the
// KV answers callers decide on (not found, exists, revision mismatch) means
// the server could not give an answer now: ErrUnavailable.
func natsErr(op string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyExists),
		errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, ErrUnavailable):
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// kvContext gives one KV call a deadline when the caller did not.
func kvContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, kvTimeout)
}

// cleanupContext is for undoing a half-done operation: it survives the
// caller's cancellation (the caller gave up; the leftovers must still go)
// but is bounded.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

func orNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
