package ingress

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// TestBacklogIsTheAllocatorsLag: the backlog sums, over the slot shards,
// what the allocators' consumer has not delivered or not seen acked; a
// shard with no consumer yet counts every record of its stream, and a
// shard with no stream counts nothing. Between samples, what this
// process had written is added; a sample replaces the count.
func TestBacklogIsTheAllocatorsLag(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, time.Minute)
	srv := testkit.StartNATS(t)
	js := srv.JetStream(t)
	const shards = 3 // shard 2 never gets a bucket
	clock := testkit.NewClock(time.Now())
	b := &backlog{js: js, shards: shards, max: 5, every: time.Second, now: clock.Now, logger: testkit.Logger(t)}

	buckets := make([]jetstream.KeyValue, 2)
	for i := range buckets {
		kv, err := js.CreateKeyValue(ctx, subjects.SlotBucketConfig(i, 1, 0))
		if err != nil {
			t.Fatal(err)
		}
		buckets[i] = kv
	}
	written := 0
	put := func(shard, n int) {
		t.Helper()
		for range n {
			written++
			key := fmt.Sprintf("c1.a1.2030010203%02d", written)
			if _, err := buckets[shard].Put(ctx, key, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	sample := func(want int64) {
		t.Helper()
		got, err := b.sample(ctx)
		if err != nil || got != want {
			t.Fatalf("sample = %d %v, want %d", got, err, want)
		}
	}

	sample(0)
	put(0, 3)
	put(1, 2)
	sample(5) // no consumer anywhere: every record

	// An allocator's consumer on shard 0: nothing read yet.
	c, err := js.CreateOrUpdateConsumer(ctx, subjects.SlotStream(0), jetstream.ConsumerConfig{
		Durable: subjects.AllocatorConsumer(0), FilterSubject: subjects.SlotStreamSubjects(0),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	sample(5)
	// Delivered, not yet acked: still behind.
	batch, err := c.FetchNoWait(2)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 {
		t.Fatalf("fetched %d records, want 2", len(msgs))
	}
	sample(5)
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sample(3) // 1 of shard 0, and shard 1's 2 (no consumer there)

	// saturated samples at most every interval; in between it adds what
	// this process wrote.
	if b.saturated(ctx) {
		t.Fatal("saturated at 3 of 5")
	}
	b.added()
	b.added()
	if !b.saturated(ctx) {
		t.Fatal("not saturated at 3 + 2 added of 5")
	}
	clock.Advance(time.Second)
	if b.saturated(ctx) {
		t.Fatal("a fresh sample (3) still saturated")
	}
	put(1, 2)
	if b.saturated(ctx) {
		t.Fatal("saturated before the next sample")
	}
	clock.Advance(time.Second)
	if !b.saturated(ctx) {
		t.Fatal("a fresh sample (5) not saturated")
	}
}

// TestBacklogSampleFailureKeepsTheCount: a sample that cannot read the
// server keeps the count it had.
func TestBacklogSampleFailureKeepsTheCount(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, time.Minute)
	srv := testkit.StartNATS(t)
	js := srv.JetStream(t)
	clock := testkit.NewClock(time.Now())
	b := &backlog{js: js, max: 2, every: time.Second, now: clock.Now, logger: testkit.Logger(t)}
	kv, err := js.CreateKeyValue(ctx, subjects.SlotBucketConfig(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"c1.a1.203001020300", "c1.a1.203001020301"} {
		if _, err := kv.Put(ctx, key, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if !b.saturated(ctx) {
		t.Fatal("not saturated at 2 of 2")
	}
	srv.Stop()
	clock.Advance(time.Second)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if !b.saturated(short) {
		t.Fatal("a failed sample forgot the count")
	}
}
