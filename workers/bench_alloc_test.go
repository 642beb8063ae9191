package workers_test

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// BenchmarkAllocatorBatch measures the allocator's batch path against the
// local Postgres: b.N confirmed records of one tenant are written straight
// into its slot bucket, then an allocator starts and the clock runs until
// every ticket is committed in the tenant database (and about to be
// acked). ns/op is per record; records/s is the same, inverted. One
// tenant: its records are drained by one goroutine at a time, so the
// figures are those of the batch size alone.
//
//	go test -run '^$' -bench AllocatorBatch -benchtime 3000x ./workers/
func BenchmarkAllocatorBatch(b *testing.B) {
	for _, size := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newAllocEnvWith(b, envOpts{agents: benchAgents, tenants: 1, quiet: true})
			e.publishConfirmed(b, b.N)
			var written atomic.Int64
			done := make(chan struct{})
			a := e.allocator(b, allocOpts{batchSize: size, ackWait: 30 * time.Second, after: func(string) {
				if written.Add(1) == int64(b.N) {
					close(done)
				}
			}})
			ctx := testkit.Context(b, 10*time.Minute)
			b.ResetTimer()
			start := time.Now()
			stop := testkit.Run(b, "Allocator", a.Run)
			select {
			case <-done:
			case <-ctx.Done():
				b.Fatalf("%d of %d tickets written", written.Load(), b.N)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
		})
	}
}

// benchAgents is the agents of the benchmark's tenant: benchEvent gives
// each of them 100 minutes of one window, then moves to the next window.
const benchAgents = 20

// benchEvent is the i-th ticket of the benchmark: never the same
// agent-minute twice, whatever i.
func (tn *allocTenant) benchEvent(i int) subjects.TicketEvent {
	perWindow := len(tn.agents) * 100
	created := allocT0.Add(time.Duration(i/perWindow) * 3 * time.Hour)
	agent := tn.agents[i%len(tn.agents)]
	slot := created.Truncate(time.Minute).Add(time.Duration(i%perWindow/len(tn.agents)+1) * time.Minute)
	id, err := subjects.NewSlotTicketID(agent, slot, nonce("bench", i))
	if err != nil {
		panic(err)
	}
	return subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: tn.ten.ID, Ticket: id, Type: subjects.Gold,
		Agent: agent, SlotTime: slot, CreatedAt: created, Deadline: created.Add(2 * time.Hour)}
}

// publishConfirmed writes the confirmed records of n benchmark tickets of
// e's first tenant into its bucket, publishing them all before waiting
// for the stream's acks (each a key's first record, as a Create).
func (e *allocEnv) publishConfirmed(b *testing.B, n int) {
	b.Helper()
	ctx := testkit.Context(b, 5*time.Minute)
	shard := subjects.SlotShard(e.ten.ID, e.shards)
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		ev := e.benchEvent(i)
		body, err := json.Marshal(subjects.ConfirmedRecord(ev, 0))
		if err != nil {
			b.Fatal(err)
		}
		f, err := e.js.PublishAsync(subjects.SlotSubject(ev.Tenant, ev.Agent, ev.SlotTime, e.shards), body,
			jetstream.WithExpectStream(subjects.SlotStream(shard)), jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-ctx.Done():
			b.Fatal("records not stored")
		}
	}
}
