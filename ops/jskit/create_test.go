package jskit_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/ops/testkit"
	"tms/subjects"
)

// TestOpenBucketRace: processes that start together race to create the
// same bucket and stream; every one of them opens it, and what the server
// then reports covers the configuration asked for, so the next open reads
// only (no update proposal).
func TestOpenBucketRace(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	ns := testkit.StartNATS(t)
	const racers = 8
	kvCfg := subjects.SlotBucketConfig(0, 1, 0)
	stCfg := subjects.DeadLettersStreamConfig(1)
	var wg sync.WaitGroup
	errs := make(chan error, 2*racers)
	for range racers {
		js := ns.JetStream(t) // a connection each, as separate processes have
		wg.Go(func() {
			if _, err := jskit.OpenBucket(ctx, js, kvCfg); err != nil {
				errs <- err
			}
			if _, err := jskit.EnsureStream(ctx, js, stCfg); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("racing open: %v", err)
	}

	js := ns.JetStream(t)
	kv, err := js.KeyValue(ctx, kvCfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !jskit.ConfigCovers(st.Config(), kvCfg) {
		t.Errorf("bucket as the server reports it %+v does not cover %+v: every open would update it", st.Config(), kvCfg)
	}
	stream, err := js.Stream(ctx, stCfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !jskit.ConfigCovers(stream.CachedInfo().Config, stCfg) {
		t.Errorf("stream as the server reports it %+v does not cover %+v", stream.CachedInfo().Config, stCfg)
	}

	// A changed setting is applied to the existing bucket.
	kvCfg.Description = "changed"
	if _, err := jskit.OpenBucket(ctx, js, kvCfg); err != nil {
		t.Fatal(err)
	}
	if st, err = kv.Status(ctx); err != nil || st.Config().Description != "changed" {
		t.Fatalf("description after an open with a new one: %v %v", st.Config().Description, err)
	}
}

func TestConfigCovers(t *testing.T) {
	t.Parallel()
	want := jetstream.StreamConfig{Name: "S", Replicas: 3, MaxAge: time.Hour}
	have := want
	have.Duplicates = 2 * time.Minute // a server default
	if !jskit.ConfigCovers(have, want) {
		t.Error("a server default counts as a difference")
	}
	have.Replicas = 1
	if jskit.ConfigCovers(have, want) {
		t.Error("replicas 1 covers replicas 3")
	}
	have = want
	have.AllowDirect = true
	if jskit.ConfigCovers(have, want) {
		t.Error("a bool the server has on covers one wanted off")
	}
}
