package admission_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ingress/admission"
	"tms/ops"
	"tms/ops/testkit"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// createBench is admission as tms serve runs it, without HTTP: an
// embedded server (fsync on every write), an ETA responder and the
// admission service, every part on an in-process connection. The tenant
// and its agents are written straight to KV: the create path reads no
// database, and no allocator reads the slot records.
type createBench struct {
	svc    *admission.Service
	tenant tenants.Tenant
}

// newCreateBench gives the tenant enough agents for n BRONZE tickets
// created from now on (480 minutes per agent in the window, a few lost
// to the clock moving on). The responder has a connection of its own, as
// in tms serve, unless oneConn: then admission and the responder share
// one.
func newCreateBench(b *testing.B, n int, oneConn bool) *createBench {
	b.Helper()
	ctx := testkit.Context(b, 60*time.Second)
	ns := testkit.StartNATS(b)
	connect := func() *nats.Conn {
		nc, err := nats.Connect("", nats.InProcessServer(ns.Server), nats.Name(b.Name()))
		if err != nil {
			b.Fatalf("connect in-process: %v", err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	jsOf := func(nc *nats.Conn) jetstream.JetStream {
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		return js
	}
	nc := connect()
	js := jsOf(nc)
	// Production's logger, at its default level, writing nowhere: what
	// a request costs in logging is counted, the lines are not kept.
	logger, err := ops.NewLogger(io.Discard, "info", "text")
	if err != nil {
		b.Fatal(err)
	}
	reg, err := tenants.NewRegistry(ctx, tenants.RegistryConfig{JS: js, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	runPart(b, reg.Run)
	now := time.Now().UTC()
	t := tenants.Tenant{ID: "cbenchcreate", Name: "Bench"}
	put := func(bucket, key string, v any) {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
		}
		if err != nil {
			b.Fatal(err)
		}
		data, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, data); err != nil {
			b.Fatal(err)
		}
	}
	put(subjects.BucketTenants, subjects.TenantKey(t.ID), subjects.TenantRecord{ID: t.ID, Name: t.Name, CreatedAt: now})
	agents := n/400 + 1
	since := now.Add(-time.Hour)
	for i := range agents {
		id := fmt.Sprintf("a%04d", i)
		put(subjects.BucketAgents, subjects.AgentKey(t.ID, id), subjects.AgentRecord{Tenant: t.ID, ID: id,
			Status: subjects.AgentAvailable, AvailableSince: &since, UpdatedAt: since})
	}
	rnc := nc
	if !oneConn {
		rnc = connect()
	}
	r, err := workers.NewResponder(ctx, workers.ResponderConfig{NC: rnc, JS: jsOf(rnc), Registry: reg, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	runPart(b, r.Run)
	svc, err := admission.New(admission.Config{NC: nc, JS: js, Tickets: tenants.NewTickets(tenants.NewPools(tenants.PoolsConfig{}), logger),
		Logger: logger, ETATimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// Once a create succeeds the responder knows the tenant; its agents
	// arrive from the watch together, as one initial snapshot.
	testkit.Eventually(b, 30*time.Second, func() bool {
		_, err := svc.Create(ctx, t, subjects.Bronze, admission.Content{}, nil)
		return r.Ready() && err == nil
	}, "a first create to succeed")
	return &createBench{svc: svc, tenant: t}
}

// runPart runs a part's Run loop until the benchmark ends.
func runPart(b *testing.B, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = run(ctx)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
}

// BenchmarkCreate measures create_ticket's admission without HTTP:
// Service.Create asks the ETA responder to reserve, whose write of the
// ticket's slot record (fsynced) is the one durable write of an
// admission. One at a time, and 16 at once per core (also with admission
// and the responder sharing one connection). docs/perf.md has figures
// (of the version that also published to TICKETS) and the command.
func BenchmarkCreate(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		e := newCreateBench(b, b.N, false)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := e.svc.Create(ctx, e.tenant, subjects.Bronze, admission.Content{}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	parallel := func(oneConn bool) func(b *testing.B) {
		return func(b *testing.B) {
			e := newCreateBench(b, b.N, oneConn)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.svc.Create(ctx, e.tenant, subjects.Bronze, admission.Content{}, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	b.Run("parallel", parallel(false))
	// Admission and the responder on one in-process connection, as tms
	// serve had them before each got its own.
	b.Run("parallel-one-conn", parallel(true))
}
