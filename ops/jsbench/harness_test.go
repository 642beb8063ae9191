package jsbench_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/embedded"
)

const (
	// publishers is how many goroutines write at once: a loaded ingress
	// has about this many admissions in flight.
	publishers = 64
	// conns is how many client connections the publishers share, as a
	// few ingress processes would.
	conns = 4
	// timeCap bounds one benchmark run whatever b.N is; a run that hits
	// it reports the operations it finished.
	timeCap = 15 * time.Second
	// opTimeout bounds one operation.
	opTimeout = 10 * time.Second
	// tenants is how many tenants the operations are spread over.
	tenants = 200
	// rateWindow is how long a fixed-rate run lasts.
	rateWindow = 4 * time.Second
)

// env is one embedded server and the client connections to it.
type env struct {
	url   string
	conns []*nats.Conn
	js    []jetstream.JetStream
}

// startEnv starts a server as `tms serve` does (ops/embedded: JetStream on
// a file store, every write fsynced unless noSync) on a random loopback
// port, with a temp store, and connects n clients. Everything is closed
// when the benchmark ends.
func startEnv(b testing.TB, n int, noSync bool, jsOpts ...jetstream.JetStreamOpt) *env {
	b.Helper()
	srv, err := embedded.Start(embedded.Config{Name: "jsbench", StoreDir: b.TempDir(), Host: "127.0.0.1",
		Port: -1, NoSync: noSync, ReadyTimeout: 20 * time.Second})
	if err != nil {
		b.Fatalf("start embedded nats: %v", err)
	}
	b.Cleanup(func() { embedded.Stop(srv) })
	e := &env{url: srv.ClientURL()}
	for i := range n {
		nc, err := nats.Connect(e.url, nats.Name(fmt.Sprintf("jsbench-%d", i)))
		if err != nil {
			b.Fatalf("connect %d: %v", i, err)
		}
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc, jsOpts...)
		if err != nil {
			b.Fatalf("jetstream %d: %v", i, err)
		}
		e.conns = append(e.conns, nc)
		e.js = append(e.js, js)
	}
	return e
}

// setupCtx is the deadline for creating streams and buckets.
func setupCtx(b testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	b.Cleanup(cancel)
	return ctx
}

// record is a fixed body of the size of a slot record with its ticket
// (about 300 bytes of JSON).
var record = []byte(`{"state":"confirmed","ticket":"tbenchbenchbenchbench","type":"BRONZE",` +
	`"created_at":"2026-12-01T15:00:00Z","nonce":"abcdefghijkl","tenant":"t000","agent":"a0000",` +
	`"minute":"202612011500","customer":"c0000000","subject":"printer on fire","priority":3,` +
	`"eta":"2026-12-01T15:07:00Z","sla_deadline":"2026-12-01T23:00:00Z","pad":"0123456789012345"}`)

// tenantOf, agentOf and minuteOf spread operation i over tenants, agents
// and minutes so that no two operations of a run share a slot.
func tenantOf(i int) string { return fmt.Sprintf("t%03d", i%tenants) }
func agentOf(i int) string  { return fmt.Sprintf("a%04d", (i/tenants)%10000) }
func minuteOf(i int) string {
	return time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).Add(time.Duration(i/(tenants*10000)) * time.Minute).Format("200601021504")
}

// stats collects the latency of every finished operation.
type stats struct {
	mu  sync.Mutex
	lat []time.Duration
}

func (s *stats) add(d time.Duration) {
	s.mu.Lock()
	s.lat = append(s.lat, d)
	s.mu.Unlock()
}

// report sets the benchmark's metrics: throughput in unit/s (ops counts
// finished operations; perOp scales it, e.g. messages per batch; want is
// how many were started),
// latency percentiles in microseconds, and how loaded the machine was when
// the run started (load), since the machine is shared.
func (s *stats) report(b *testing.B, elapsed time.Duration, unit string, perOp int, load machineLoad, want int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.lat)
	if n == 0 {
		return
	}
	slices.Sort(s.lat)
	pct := func(p float64) float64 {
		return float64(s.lat[min(n-1, int(float64(n)*p))].Microseconds())
	}
	b.ReportMetric(float64(n*perOp)/elapsed.Seconds(), unit+"/s")
	b.ReportMetric(pct(0.50), "p50_us")
	b.ReportMetric(pct(0.90), "p90_us")
	b.ReportMetric(pct(0.99), "p99_us")
	b.ReportMetric(load.load1, "load1")
	b.ReportMetric(load.cpuSome, "cpu_psi%")
	b.ReportMetric(load.ioSome, "io_psi%")
	if n < want {
		b.Logf("time cap %s: finished %d of %d operations", timeCap, n, want)
	}
}

// machineLoad is how busy the shared machine was when a run started: the
// one-minute load average and the share of the last 10 s in which some
// task waited for the CPU and for I/O (/proc/pressure), 0 when unknown.
type machineLoad struct{ load1, cpuSome, ioSome float64 }

func loadAvg() machineLoad {
	var m machineLoad
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load1, _ = strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	}
	m.cpuSome, m.ioSome = pressure("/proc/pressure/cpu"), pressure("/proc/pressure/io")
	return m
}

// pressure is the "some avg10" of a PSI file.
func pressure(file string) float64 {
	raw, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(raw)) {
		if v, ok := strings.CutPrefix(f, "avg10="); ok {
			p, _ := strconv.ParseFloat(v, 64)
			return p
		}
	}
	return 0
}

// errOnce keeps the first error of many goroutines.
type errOnce struct {
	once   sync.Once
	err    error
	failed atomic.Bool // set once err is
}

func (e *errOnce) set(err error) {
	e.once.Do(func() {
		e.err = err
		e.failed.Store(true)
	})
}

// drive runs op for i = 0..b.N-1 from workers goroutines (worker w takes
// the next i), until all are done or timeCap has passed, and reports the
// throughput and latency of op in unit/s.
func drive(b *testing.B, workers int, unit string, perOp int, op func(ctx context.Context, w, i int) error) {
	var (
		next  atomic.Int64
		st    stats
		first errOnce
		wg    sync.WaitGroup
	)
	load1 := loadAvg()
	deadline := time.Now().Add(timeCap)
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N || time.Now().After(deadline) || first.failed.Load() {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				t0 := time.Now()
				err := op(ctx, w, i)
				d := time.Since(t0)
				cancel()
				if err != nil {
					first.set(fmt.Errorf("op %d: %w", i, err))
					return
				}
				st.add(d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if first.err != nil {
		b.Fatal(first.err)
	}
	st.report(b, elapsed, unit, perOp, load1, b.N)
}

// driveRate starts op at a fixed rate (open loop, as independent clients
// arrive) for rateWindow or b.N operations, whichever is fewer, with at most
// maxInFlight running, and reports the latency from each operation's
// scheduled start, so a server that falls behind shows as queueing, not
// as a slower arrival rate.
func driveRate(b *testing.B, rate int, op func(ctx context.Context, i int) error) {
	const maxInFlight = 2048
	n := min(b.N, int(float64(rate)*rateWindow.Seconds()))
	var (
		st    stats
		first errOnce
		wg    sync.WaitGroup
	)
	slots := make(chan struct{}, maxInFlight)
	load1 := loadAvg()
	interval := time.Second / time.Duration(rate)
	// The pacing waits on one timer until each operation's due instant.
	pace := time.NewTimer(0)
	defer pace.Stop()
	<-pace.C
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < n && !first.failed.Load() && time.Since(start) < timeCap; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			pace.Reset(d)
			<-pace.C
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			if err := op(ctx, i); err != nil {
				first.set(fmt.Errorf("op %d: %w", i, err))
				return
			}
			st.add(time.Since(due))
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if first.err != nil {
		b.Fatal(first.err)
	}
	st.report(b, elapsed, "ops", 1, load1, n)
}
