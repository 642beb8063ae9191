package jskit

import (
	"context"
	"errors"
	"reflect"

	"github.com/nats-io/nats.go/jetstream"
)

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
