package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvTimeout bounds one KV round trip made on behalf of a caller whose
// context has no earlier deadline.
const kvTimeout = 5 * time.Second

// limitMarkerTTL is how long a bucket keeps the marker that a per-key TTL
// left behind, so that watchers (and rebuilding watchers) see the removal.
const limitMarkerTTL = 10 * time.Minute

// openBucket opens the bucket with cfg (replicas, marker TTL), creating
// it if needed (OpenBucket). Every role calls it at start, so the first
// one creates it.
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
	kv, err := OpenBucket(ctx, js, cfg)
	if err != nil {
		return nil, natsErr("opening bucket "+cfg.Bucket, err)
	}
	return kv, nil
}

// OpenBucket opens the bucket cfg names, creating it when it does not
// exist and updating it when its settings differ from cfg. It is safe for
// processes that start together: a create that loses the race to another
// process's opens the bucket that won. It reads before it writes because
// on a cluster an update is a proposal to the meta leader even when it
// changes nothing, and concurrent proposals on one stream are sometimes
// left unanswered until the caller's deadline.
func OpenBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for raced := false; ; raced = true {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) && !raced {
				continue
			}
			return kv, err
		}
		if err != nil {
			return nil, err
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, err
		}
		if ConfigCovers(st.Config(), cfg) {
			return kv, nil
		}
		return js.UpdateKeyValue(ctx, cfg)
	}
}

// EnsureStream is OpenBucket for a stream: it creates the stream when it
// does not exist, updates it when its settings differ from cfg, and
// re-opens it when another process created it first.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	for raced := false; ; raced = true {
		st, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && !raced {
				continue
			}
			return st, err
		}
		if err != nil {
			return nil, err
		}
		if ConfigCovers(st.CachedInfo().Config, cfg) {
			return st, nil
		}
		return js.UpdateStream(ctx, cfg)
	}
}

// ConfigCovers reports whether a configuration the server reports (have)
// already has every setting of want, two structs of one type: each field
// of want that is set, and every bool. A field left zero in want is the
// server's to fill in (defaults such as a stream's duplicate window or
// metadata), so it is not compared.
func ConfigCovers[T any](have, want T) bool {
	h, w := reflect.ValueOf(have), reflect.ValueOf(want)
	for i := range w.NumField() {
		wf := w.Field(i)
		if wf.Kind() != reflect.Bool && wf.IsZero() {
			continue
		}
		if !reflect.DeepEqual(h.Field(i).Interface(), wf.Interface()) {
			return false
		}
	}
	return true
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
