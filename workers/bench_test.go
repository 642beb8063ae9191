package workers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
	"tms/workers/calendar"
)

// benchEnv is an embedded server (fsync on every write, as in
// production) with one tenant whose records are written straight to KV:
// the admission path reads only KV, so no Postgres is involved.
type benchEnv struct {
	nats   *testkit.NATS
	r      *workers.Responder
	tenant string
	bodies [][]byte
}

// newBenchEnv gives the tenant enough agents that n BRONZE reservations
// never run out (480 slots per agent in the window). The responder
// connects over TCP.
func newBenchEnv(b *testing.B, n int) *benchEnv {
	b.Helper()
	return newBenchEnvConn(b, n, false)
}

// connect opens a client connection to the env's server: over TCP, or
// in-process (no socket), as tms serve connects its own parts.
func (e *benchEnv) connect(b *testing.B, inProcess bool) *nats.Conn {
	b.Helper()
	if !inProcess {
		return e.nats.Connect(b)
	}
	nc, err := nats.Connect("", nats.InProcessServer(e.nats.Server), nats.Name(b.Name()))
	if err != nil {
		b.Fatalf("connect in-process: %v", err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// newBenchEnvConn is newBenchEnv with the responder connected in-process
// when inProcess is set.
func newBenchEnvConn(b *testing.B, n int, inProcess bool) *benchEnv {
	b.Helper()
	return newBenchEnvAgents(b, n/480+1, n, inProcess)
}

// newBenchEnvAgents is newBenchEnvConn with a given number of agents.
func newBenchEnvAgents(b *testing.B, agents, n int, inProcess bool) *benchEnv {
	b.Helper()
	ctx := testkit.Context(b, 60*time.Second)
	e := &benchEnv{nats: testkit.StartNATS(b), tenant: "cbench"}
	js := e.nats.JetStream(b)
	reg := tenantstest.StartRegistry(b, tenants.RegistryConfig{JS: js})
	kvTenants, err := js.KeyValue(ctx, subjects.BucketTenants)
	if err != nil {
		b.Fatal(err)
	}
	rec, _ := json.Marshal(subjects.TenantRecord{ID: e.tenant, Name: "Bench", CreatedAt: respT0})
	if _, err := kvTenants.Put(ctx, subjects.TenantKey(e.tenant), rec); err != nil {
		b.Fatal(err)
	}
	agentsKV, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: subjects.BucketAgents, History: 1})
	if err != nil {
		b.Fatal(err)
	}
	since := respT0
	for i := 0; i < agents; i++ {
		rec, _ := json.Marshal(subjects.AgentRecord{Tenant: e.tenant, ID: fmt.Sprintf("a%04d", i),
			Status: subjects.AgentAvailable, AvailableSince: &since, UpdatedAt: since})
		if _, err := agentsKV.Put(ctx, subjects.AgentKey(e.tenant, fmt.Sprintf("a%04d", i)), rec); err != nil {
			b.Fatal(err)
		}
	}
	nc := e.connect(b, inProcess)
	rjs, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	clock := testkit.NewClock(respT0)
	e.r, err = workers.NewResponder(ctx, workers.ResponderConfig{NC: nc, JS: rjs, Registry: reg, Now: clock.Now,
		Concurrency: 64})
	if err != nil {
		b.Fatal(err)
	}
	testkit.Start(b, "Responder", e.r, 30*time.Second)
	first, last, _ := calendar.Window(respT0, subjects.Bronze)
	testkit.Eventually(b, 30*time.Second, func() bool {
		return e.r.FreeSlots(e.tenant, first, last) == agents*480
	}, "responder sees every agent")
	testkit.Eventually(b, 10*time.Second, func() bool {
		_, err := reg.Get(ctx, e.tenant)
		return err == nil
	}, "tenant known")
	e.bodies = make([][]byte, n)
	for i := range e.bodies {
		e.bodies[i], _ = json.Marshal(newReserve(e.tenant, subjects.Bronze, respT0))
	}
	return e
}

// BenchmarkReserve measures admission alone: a reserve request answered
// by the responder, which claims a slot in its calendar and creates the
// ticket's confirmed record (one JetStream publish with fsync). The sub-benchmarks split the
// cost: the request-reply hop (over TCP, and in-process as tms serve
// connects), the responder's own work, the calendar. docs/perf.md has
// figures and the command.
func BenchmarkReserve(b *testing.B) {
	b.Run("request-reply", func(b *testing.B) {
		e := newBenchEnv(b, b.N)
		client := e.nats.Connect(b)
		subject := subjects.ETA(e.tenant)
		requestEach(b, client, subject, e.bodies)
	})
	b.Run("request-reply-inprocess", func(b *testing.B) {
		// As tms serve runs: the asker and the responder on in-process
		// connections to the embedded server.
		e := newBenchEnvConn(b, b.N, true)
		client := e.connect(b, true)
		subject := subjects.ETA(e.tenant)
		requestEach(b, client, subject, e.bodies)
	})
	b.Run("request-reply-parallel", func(b *testing.B) {
		e := newBenchEnv(b, b.N)
		client := e.nats.Connect(b)
		subject := subjects.ETA(e.tenant)
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				msg, err := client.Request(subject, e.bodies[next.Add(1)-1], 5*time.Second)
				if err != nil {
					b.Error(err)
					return
				}
				var reply subjects.ETAReply
				if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Code != http.StatusCreated {
					b.Errorf("reply %s: %v", msg.Data, err)
					return
				}
			}
		})
	})
	b.Run("direct", func(b *testing.B) {
		e := newBenchEnv(b, b.N)
		subject := subjects.ETA(e.tenant)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if reply := e.r.Handle(ctx, subject, e.bodies[i]); reply.Code != http.StatusCreated {
				b.Fatalf("reply %+v", reply)
			}
		}
	})
	b.Run("calendar-place", func(b *testing.B) {
		// 20 agents, BRONZE: the placement (no moves: a BRONZE ticket
		// never finds one) and its bookkeeping, no I/O.
		cal := calendar.New(respT0)
		for i := 0; i < 20; i++ {
			cal.SetAgent(calendar.Agent{ID: fmt.Sprintf("a%02d", i), Available: true, Since: respT0})
		}
		first, last, _ := calendar.Window(respT0, subjects.Bronze)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			p, ok := cal.Place(respT0, first, last)
			if !ok { // full: start again on a fresh calendar
				b.StopTimer()
				cal.LoadSlots(nil)
				b.StartTimer()
				p, _ = cal.Place(respT0, first, last)
			}
			cal.Taken(p.Claims[0], uint64(i+1), calendar.Mark{State: calendar.Busy, Last: last})
		}
	})
}

// BenchmarkReserveWithMoves is BenchmarkReserve's request-reply where
// every admission must move one accepted ticket: BRONZE tickets fill
// the first two hours of every agent, then each GOLD ticket is admitted
// by moving one of them later inside its window (one atomic batch of two
// records instead of one create). "without-moves" is the same calendar
// shape admitting BRONZE tickets into free minutes, for the side by side.
func BenchmarkReserveWithMoves(b *testing.B) {
	for _, sub := range []struct {
		name string
		typ  string
	}{{"without-moves", subjects.Bronze}, {"with-moves", subjects.Gold}} {
		b.Run(sub.name, func(b *testing.B) {
			agents := b.N/110 + 1 // GOLD fits 115 per agent past the frozen horizon
			e := newBenchEnvAgents(b, agents, 0, false)
			client := e.nats.Connect(b)
			subject := subjects.ETA(e.tenant)
			fill := make([][]byte, 120*agents)
			for i := range fill {
				fill[i], _ = json.Marshal(newReserve(e.tenant, subjects.Bronze, respT0))
			}
			for _, body := range fill {
				if _, err := client.Request(subject, body, 5*time.Second); err != nil {
					b.Fatal(err)
				}
			}
			bodies := make([][]byte, b.N)
			for i := range bodies {
				bodies[i], _ = json.Marshal(newReserve(e.tenant, sub.typ, respT0))
			}
			moves := requestEach(b, client, subject, bodies)
			b.ReportMetric(float64(moves)/float64(b.N), "moves/op")
		})
	}
}

// requestEach sends bodies[0:b.N] as reserve requests one after another
// and fails on any answer but a reservation. It returns the moves the
// reservations took.
func requestEach(b *testing.B, client *nats.Conn, subject string, bodies [][]byte) (moves int) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg, err := client.Request(subject, bodies[i], 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		var reply subjects.ETAReply
		if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Code != http.StatusCreated {
			b.Fatalf("reply %s: %v", msg.Data, err)
		}
		moves += reply.Moves
	}
	return moves
}
