package jsbench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/jskit"
	"tms/subjects"
)

// slotStreamConfig is shard i of the candidate slot streams of issue 9:
// limits retention, so neither an ack nor an expiry writes a tombstone on
// the hot path (MaxAge longer than the longest SLA), one subject per slot.
func slotStreamConfig(i int, atomicPublish bool) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               "SLOTS_" + strconv.Itoa(i),
		Subjects:           []string{"slots." + strconv.Itoa(i) + ".>"},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           1,
		MaxAge:             subjects.LongestSLA + time.Hour,
		Discard:            jetstream.DiscardOld,
		AllowDirect:        true,
		AllowAtomicPublish: atomicPublish,
		MaxMsgSize:         4 << 10,
	}
}

// slotSubject is operation i's slot on shard: slots.<shard>.<tenant>.<agent>.<minute>.
func slotSubject(shard, i int) string {
	return "slots." + strconv.Itoa(shard) + "." + tenantOf(i) + "." + agentOf(i) + "." + minuteOf(i)
}

// createSlotStreams creates shards streams and returns, for each
// operation, the shard of its tenant (subjects.SlotShard, as tms pins a
// tenant to one shard today).
func createSlotStreams(b testing.TB, js jetstream.JetStream, shards int, atomicPublish bool) func(i int) int {
	b.Helper()
	ctx := setupCtx(b)
	for s := range shards {
		if _, err := js.CreateStream(ctx, slotStreamConfig(s, atomicPublish)); err != nil {
			b.Fatalf("create stream %d: %v", s, err)
		}
	}
	shardOf := make([]int, tenants)
	for t := range tenants {
		shardOf[t] = subjects.SlotShard(tenantOf(t), shards)
	}
	return func(i int) int { return shardOf[i%tenants] }
}

// oldSlotBucketConfig is the slot bucket of shape a, as tms configured it
// before the one-write admission: one record per key, per-key TTLs and
// limit markers.
func oldSlotBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: "TMS_SLOTS_0", History: 1, Storage: jetstream.FileStorage,
		Replicas: 1, LimitMarkerTTL: 10 * time.Minute, MaxValueSize: 4 << 10}
}

// oldTicketsStreamConfig is shape a's TICKETS stream: work-queue
// retention, one subject per ticket, message ids deduplicated.
func oldTicketsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: "TMS_TICKETS", Subjects: []string{"tms.tickets.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 1,
		Duplicates: 2 * time.Minute, Discard: jetstream.DiscardNew, AllowDirect: true, MaxMsgSize: 16 << 10}
}

// todayAdmission sets up what an admission writes today and returns one
// admission (shape a), one write after the other: the KV Create of the
// slot key with a per-key TTL (its expiry, 1 s later, writes a delete
// marker: another fsynced write), the publish of the ticket to the
// work-queue TICKETS stream, and an allocator's DoubleAck of it (the ack
// deletes the message: a fsynced tombstone). An admission ends when its
// ticket is acked; the allocators do nothing but ack.
func todayAdmission(b *testing.B, e *env) func(ctx context.Context, c, i int) error {
	ctx := setupCtx(b)
	kvs := make([]jetstream.KeyValue, conns)
	for c := range conns {
		var err error
		kvs[c], err = jskit.OpenBucket(ctx, e.js[c], oldSlotBucketConfig())
		if err != nil {
			b.Fatalf("slot bucket: %v", err)
		}
	}
	stream, err := e.js[0].CreateStream(ctx, oldTicketsStreamConfig())
	if err != nil {
		b.Fatalf("tickets stream: %v", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bench-alloc",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000})
	if err != nil {
		b.Fatalf("consumer: %v", err)
	}
	// acked maps a TICKETS sequence to a channel the allocator closes
	// once the server confirmed the ack.
	var acked sync.Map
	waitFor := func(seq uint64) chan struct{} {
		ch, _ := acked.LoadOrStore(seq, make(chan struct{}))
		return ch.(chan struct{})
	}
	const allocators = 16
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for a := range allocators {
		it, err := cons.Messages(jetstream.PullMaxMessages(16))
		if err != nil {
			b.Fatalf("allocator %d: %v", a, err)
		}
		wg.Go(func() {
			for {
				msg, err := it.Next()
				if err != nil {
					return
				}
				md, err := msg.Metadata()
				if err != nil {
					continue
				}
				actx, cancel := context.WithTimeout(context.Background(), opTimeout)
				err = msg.DoubleAck(actx)
				cancel()
				if err == nil {
					close(waitFor(md.Sequence.Stream))
				}
			}
		})
		wg.Go(func() { <-stop; it.Stop() })
	}
	b.Cleanup(func() { close(stop); wg.Wait() })
	return func(ctx context.Context, c, i int) error {
		minute, _ := time.Parse("200601021504", minuteOf(i))
		if _, err := kvs[c].Create(ctx, subjects.SlotKey(tenantOf(i), agentOf(i), minute), record,
			jetstream.KeyTTL(time.Second)); err != nil {
			return fmt.Errorf("slot create: %w", err)
		}
		ticket := "t" + strconv.Itoa(i)
		ack, err := e.js[c].Publish(ctx, "tms.tickets."+tenantOf(i)+"."+ticket, record,
			jetstream.WithMsgID(ticket))
		if err != nil {
			return fmt.Errorf("ticket publish: %w", err)
		}
		select {
		case <-waitFor(ack.Sequence):
			acked.Delete(ack.Sequence)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("ticket %d not acked: %w", ack.Sequence, ctx.Err())
		}
	}
}

// BenchmarkAdmissionToday is shape a, from 64 publishers at once.
func BenchmarkAdmissionToday(b *testing.B) {
	e := startEnv(b, conns, false)
	admit := todayAdmission(b, e)
	b.ReportAllocs()
	drive(b, publishers, "ops", 1, func(ctx context.Context, w, i int) error { return admit(ctx, w%conns, i) })
}

// BenchmarkAdmissionTodayRate is shape a started at a fixed rate.
func BenchmarkAdmissionTodayRate(b *testing.B) {
	for _, rate := range []int{500, 1000, 2000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			e := startEnv(b, conns, false)
			admit := todayAdmission(b, e)
			driveRate(b, rate, func(ctx context.Context, i int) error { return admit(ctx, i%conns, i) })
		})
	}
}

// BenchmarkSlotPublish is shape b: one publish per admission to a
// limits-retention stream, on the slot's own subject, only if the subject
// is empty (Nats-Expected-Last-Subject-Sequence: 0), awaiting the PubAck.
// "nosync" is the same without fsync, to see what the fsync costs.
func BenchmarkSlotPublish(b *testing.B) {
	for _, tc := range []struct {
		name    string
		workers int
		noSync  bool
	}{
		{"publishers=1", 1, false},
		{"publishers=64", publishers, false},
		{"publishers=64/nosync", publishers, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := startEnv(b, conns, tc.noSync)
			createSlotStreams(b, e.js[0], 1, false)
			b.ReportAllocs()
			drive(b, tc.workers, "ops", 1, func(ctx context.Context, w, i int) error {
				_, err := e.js[w%conns].Publish(ctx, slotSubject(0, i), record,
					jetstream.WithExpectLastSequencePerSubject(0))
				return err
			})
		})
	}
}

// BenchmarkSlotPublishAsync is shape c: shape b with the publishes sent
// by one goroutine per connection through PublishAsync, window publishes
// in flight in all; the latency is from the publish to its PubAck.
func BenchmarkSlotPublishAsync(b *testing.B) {
	for _, tc := range []struct{ streams, window int }{{1, 64}, {1, 256}, {4, 64}, {4, 256}, {8, 256}} {
		b.Run(fmt.Sprintf("streams=%d/window=%d", tc.streams, tc.window), func(b *testing.B) {
			e := startEnv(b, conns, false, jetstream.WithPublishAsyncMaxPending(tc.window/conns))
			shardOf := createSlotStreams(b, e.js[0], tc.streams, false)
			var (
				next  atomic.Int64
				st    stats
				first errOnce
				wg    sync.WaitGroup
			)
			load1 := loadAvg()
			deadline := time.Now().Add(timeCap)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for c := range conns {
				wg.Go(func() {
					window := make(chan struct{}, tc.window/conns)
					var acks sync.WaitGroup
					defer acks.Wait()
					for {
						i := int(next.Add(1) - 1)
						if i >= b.N || time.Now().After(deadline) || first.failed.Load() {
							return
						}
						window <- struct{}{}
						t0 := time.Now()
						f, err := e.js[c].PublishAsync(slotSubject(shardOf(i), i), record,
							jetstream.WithExpectLastSequencePerSubject(0))
						if err != nil {
							first.set(fmt.Errorf("publish %d: %w", i, err))
							<-window
							return
						}
						acks.Go(func() {
							defer func() { <-window }()
							select {
							case <-f.Ok():
								st.add(time.Since(t0))
							case err := <-f.Err():
								first.set(fmt.Errorf("publish %d: %w", i, err))
							case <-time.After(opTimeout):
								first.set(fmt.Errorf("publish %d: no ack in %s", i, opTimeout))
							}
						})
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if first.err != nil {
				b.Fatal(first.err)
			}
			st.report(b, elapsed, "ops", 1, load1, b.N)
		})
	}
}

// BenchmarkSlotPublishShards is shape d: shape b over N streams, each
// operation on the stream of its tenant's shard, to see how far fsyncs of
// different streams overlap on this disk.
func BenchmarkSlotPublishShards(b *testing.B) {
	for _, shards := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("streams=%d", shards), func(b *testing.B) {
			e := startEnv(b, conns, false)
			shardOf := createSlotStreams(b, e.js[0], shards, false)
			b.ReportAllocs()
			drive(b, publishers, "ops", 1, func(ctx context.Context, w, i int) error {
				_, err := e.js[w%conns].Publish(ctx, slotSubject(shardOf(i), i), record,
					jetstream.WithExpectLastSequencePerSubject(0))
				return err
			})
		})
	}
}

// BenchmarkSlotPublishRate is shape d started at a fixed rate, the
// latency an admission would see at 2,000 and 6,000 admissions/s.
func BenchmarkSlotPublishRate(b *testing.B) {
	for _, shards := range []int{1, 2, 4, 8} {
		for _, rate := range []int{2000, 6000} {
			b.Run(fmt.Sprintf("streams=%d/rate=%d", shards, rate), func(b *testing.B) {
				e := startEnv(b, conns, false)
				shardOf := createSlotStreams(b, e.js[0], shards, false)
				driveRate(b, rate, func(ctx context.Context, i int) error {
					_, err := e.js[i%conns].Publish(ctx, slotSubject(shardOf(i), i), record,
						jetstream.WithExpectLastSequencePerSubject(0))
					return err
				})
			})
		}
	}
}

// batchAck is the answer to an atomic batch's commit.
type batchAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// BenchmarkAtomicBatch is shape e: an ADR-50 atomic batch of k slot
// records, each only if its subject is empty, committed with one PubAck.
// nats.go v1.55 has no helper for it, so the batch is raw headers: every
// message carries Nats-Batch-Id and Nats-Batch-Sequence, the last one
// Nats-Batch-Commit: 1 and a reply subject. The server allows 50 batches
// in flight per stream, so 32 publishers, not 64. One operation is one
// batch; msgs/s counts the records.
func BenchmarkAtomicBatch(b *testing.B) {
	const batchPublishers = 32
	for _, tc := range []struct{ k, streams int }{{1, 1}, {8, 1}, {64, 1}, {8, 4}} {
		b.Run(fmt.Sprintf("k=%d/streams=%d", tc.k, tc.streams), func(b *testing.B) {
			e := startEnv(b, conns, false)
			shardOf := createSlotStreams(b, e.js[0], tc.streams, true)
			var batchSeq atomic.Int64
			b.ReportAllocs()
			drive(b, batchPublishers, "msgs", tc.k, func(ctx context.Context, w, i int) error {
				nc := e.conns[w%conns]
				id := "b" + strconv.FormatInt(batchSeq.Add(1), 10)
				shard := shardOf(i)
				for j := range tc.k {
					msg := nats.NewMsg(slotSubject(shard, i*tc.k+j))
					msg.Data = record
					msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
					msg.Header.Set("Nats-Batch-Id", id)
					msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j+1))
					if j < tc.k-1 {
						if err := nc.PublishMsg(msg); err != nil {
							return fmt.Errorf("batch %s message %d: %w", id, j+1, err)
						}
						continue
					}
					msg.Header.Set("Nats-Batch-Commit", "1")
					reply, err := nc.RequestMsgWithContext(ctx, msg)
					if err != nil {
						return fmt.Errorf("batch %s commit: %w", id, err)
					}
					var ack batchAck
					if err := json.Unmarshal(reply.Data, &ack); err != nil {
						return fmt.Errorf("batch %s ack %q: %w", id, reply.Data, err)
					}
					if ack.Error != nil || ack.Count != tc.k {
						return fmt.Errorf("batch %s refused: %s", id, reply.Data)
					}
				}
				return nil
			})
		})
	}
}

// BenchmarkRead is shape f: the reads an admission design could lean on,
// over 10,000 records: a KV Get (a direct get of the key's last message),
// a direct get of the last message on one slot subject of a limits
// stream, and a watch of the whole bucket up to its initial-values marker
// (keys/s).
func BenchmarkRead(b *testing.B) {
	const keys = 10000
	e := startEnv(b, conns, false)
	ctx := setupCtx(b)
	kvs := make([]jetstream.KeyValue, conns)
	for c := range conns {
		var err error
		kvs[c], err = jskit.OpenBucket(ctx, e.js[c], jetstream.KeyValueConfig{Bucket: "BENCH_READ", History: 1,
			Storage: jetstream.FileStorage})
		if err != nil {
			b.Fatalf("bucket: %v", err)
		}
	}
	createSlotStreams(b, e.js[0], 1, false)
	streams := make([]jetstream.Stream, conns)
	for c := range conns {
		var err error
		if streams[c], err = e.js[c].Stream(ctx, "SLOTS_0"); err != nil {
			b.Fatalf("stream: %v", err)
		}
	}
	key := func(i int) string { return tenantOf(i) + "." + agentOf(i) + "." + minuteOf(i) }
	// Fill in rounds below the client's limit of pending async publishes.
	var fill []jetstream.PubAckFuture
	wait := func() {
		for _, f := range fill {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatalf("fill: %v", err)
			case <-ctx.Done():
				b.Fatalf("fill: %v", ctx.Err())
			}
		}
		fill = fill[:0]
	}
	for i := range keys {
		for _, subj := range []string{"$KV.BENCH_READ." + key(i), slotSubject(0, i)} {
			f, err := e.js[0].PublishAsync(subj, record)
			if err != nil {
				b.Fatalf("fill %s: %v", subj, err)
			}
			fill = append(fill, f)
		}
		if len(fill) >= 1000 {
			wait()
		}
	}
	wait()
	b.Run("kv-get", func(b *testing.B) {
		drive(b, publishers, "ops", 1, func(ctx context.Context, w, i int) error {
			_, err := kvs[w%conns].Get(ctx, key(i%keys))
			return err
		})
	})
	b.Run("direct-get-last-for-subject", func(b *testing.B) {
		drive(b, publishers, "ops", 1, func(ctx context.Context, w, i int) error {
			_, err := streams[w%conns].GetLastMsgForSubject(ctx, slotSubject(0, i%keys))
			return err
		})
	})
	b.Run("watch-initial-values", func(b *testing.B) {
		drive(b, 1, "keys", keys, func(ctx context.Context, w, i int) error {
			wt, err := kvs[0].WatchAll(ctx)
			if err != nil {
				return err
			}
			defer jskit.StopWatcher(wt)
			for n := 0; ; {
				select {
				case entry := <-wt.Updates():
					if entry == nil {
						if n != keys {
							return fmt.Errorf("watch saw %d keys before the marker, want %d", n, keys)
						}
						return nil
					}
					n++
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		})
	})
}

// TestExpectedLastSubjectSequenceRace checks what shape b stands on: of
// many publishers racing to the same empty subject with
// Nats-Expected-Last-Subject-Sequence 0, exactly one wins, and every loser
// gets the wrong-last-sequence error, on a stream fsyncing every write.
func TestExpectedLastSubjectSequenceRace(t *testing.T) {
	t.Parallel()
	e := startEnv(t, conns, false)
	createSlotStreams(t, e.js[0], 1, false)
	const racers, rounds = 16, 50
	for r := range rounds {
		var (
			wins, lost atomic.Int64
			other      errOnce
			wg         sync.WaitGroup
		)
		subj := slotSubject(0, r)
		ready := make(chan struct{})
		for w := range racers {
			wg.Go(func() {
				<-ready
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				defer cancel()
				_, err := e.js[w%conns].Publish(ctx, subj, record, jetstream.WithExpectLastSequencePerSubject(0))
				switch {
				case err == nil:
					wins.Add(1)
				case jskit.WrongLastSequence(err):
					lost.Add(1)
				default:
					other.set(err)
				}
			})
		}
		close(ready)
		wg.Wait()
		if other.err != nil {
			t.Fatalf("round %d: %v", r, other.err)
		}
		if wins.Load() != 1 || lost.Load() != racers-1 {
			t.Fatalf("round %d: %d won and %d lost, want 1 and %d", r, wins.Load(), lost.Load(), racers-1)
		}
	}
}
