package jskit_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/ops/testkit"
	"tms/subjects"
)

// TestWriteKVBatch: a batch lands whole, at consecutive revisions that
// WriteKVBatch reports; one stale expectation refuses all of it; a
// bucket whose stream has atomic publishing off says so.
func TestWriteKVBatch(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	ns := testkit.StartNATS(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := subjects.SlotBucketConfig(0, 1, 0)
	kv, err := jskit.OpenBucket(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = jskit.WriteKVBatch(ctx, nc, cfg.Bucket, []jskit.KVWrite{{Key: "a", Value: []byte("1")}})
	if !jskit.AtomicPublishDisabled(err) {
		t.Fatalf("batch on a bucket without atomic publish: %v, want the disabled error", err)
	}
	if err := jskit.EnableAtomicPublish(ctx, js, jskit.KVStream(cfg.Bucket)); err != nil {
		t.Fatal(err)
	}
	revA, err := kv.Create(ctx, "a", []byte("a0"))
	if err != nil {
		t.Fatal(err)
	}
	revs, err := jskit.WriteKVBatch(ctx, nc, cfg.Bucket, []jskit.KVWrite{
		{Key: "b", Value: []byte("b1")}, {Key: "a", Value: []byte("a1"), Prev: revA}, {Key: "c", Value: []byte("c1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"b", "a", "c"} {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if e.Revision() != revs[i] || string(e.Value()) != key+"1" {
			t.Errorf("key %s at revision %d = %q, batch said revision %d", key, e.Revision(), e.Value(), revs[i])
		}
	}

	// A stale expectation on the second write: nothing of the batch lands.
	_, err = jskit.WriteKVBatch(ctx, nc, cfg.Bucket, []jskit.KVWrite{
		{Key: "d", Value: []byte("d1")}, {Key: "a", Value: []byte("a2"), Prev: revA},
	})
	if !jskit.CreateLost(err) {
		t.Fatalf("batch with a stale revision: %v, want a lost compare-and-set", err)
	}
	if _, err := kv.Get(ctx, "d"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("key d after the refused batch: %v, want not found", err)
	}
	if e, err := kv.Get(ctx, "a"); err != nil || string(e.Value()) != "a1" {
		t.Errorf("key a after the refused batch: %v %v, want a1", e, err)
	}
	// A create where the key exists refuses the batch as well.
	if _, err := jskit.WriteKVBatch(ctx, nc, cfg.Bucket, []jskit.KVWrite{{Key: "c", Value: []byte("c2")}}); !jskit.CreateLost(err) {
		t.Errorf("create over an existing key in a batch: %v, want a lost compare-and-set", err)
	}
}

// BenchmarkWriteKVBatch: what a placement with moves costs in JetStream
// (a batch of size writes) beside a plain KV create, on one file-backed
// R1 bucket (fsync on every write, as tms runs).
func BenchmarkWriteKVBatch(b *testing.B) {
	for _, size := range []int{0, 1, 2, 4} {
		name := fmt.Sprintf("batch-%d", size)
		if size == 0 {
			name = "create"
		}
		b.Run(name, func(b *testing.B) {
			ctx := testkit.Context(b, 120*time.Second)
			ns := testkit.StartNATS(b)
			nc := ns.Connect(b)
			js, err := jetstream.New(nc)
			if err != nil {
				b.Fatal(err)
			}
			cfg := subjects.SlotBucketConfig(0, 1, 0)
			kv, err := jskit.OpenBucket(ctx, js, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := jskit.EnableAtomicPublish(ctx, js, jskit.KVStream(cfg.Bucket)); err != nil {
				b.Fatal(err)
			}
			value := make([]byte, 300)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if size == 0 {
					if _, err := kv.Create(ctx, fmt.Sprintf("k%d", i), value); err != nil {
						b.Fatal(err)
					}
					continue
				}
				writes := make([]jskit.KVWrite, size)
				for j := range writes {
					writes[j] = jskit.KVWrite{Key: fmt.Sprintf("k%d-%d", i, j), Value: value}
				}
				if _, err := jskit.WriteKVBatch(ctx, nc, cfg.Bucket, writes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
