package workers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// Worker info: each allocator process answers subjects.SubjectWorkersInfo
// (a plain subscription: every process answers) with its
// subjects.WorkerInfo, for `tms ops workers` to list them.

// workerIdentity is what names a process in its WorkerInfo.
type workerIdentity struct {
	id, host         string
	pid              int
	version, command string
	started          time.Time
}

func newWorkerIdentity(version, command string) workerIdentity {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	pid := os.Getpid()
	if version == "" {
		version = "unknown"
	}
	return workerIdentity{id: fmt.Sprintf("%s-%d-%s", host, pid, hex.EncodeToString(b[:])), host: host, pid: pid,
		version: version, command: command, started: time.Now().UTC()}
}

// rateWindow is the window of WorkerInfo.Rate.
const rateWindow = 10 * time.Second

// rateBuckets is rateWindow in one-second buckets.
const rateBuckets = int64(rateWindow / time.Second)

// rateCounter counts the records settled, in all and a second over the
// last rateWindow (the second under way included, so a steady rate reads
// a little low within each second).
type rateCounter struct {
	now     func() time.Time
	mu      sync.Mutex
	total   uint64
	counts  [rateBuckets]uint64
	seconds [rateBuckets]int64 // the Unix second each count is of
}

func newRateCounter(now func() time.Time) *rateCounter {
	if now == nil {
		now = time.Now
	}
	return &rateCounter{now: now}
}

// add counts n records settled now.
func (r *rateCounter) add(n int) {
	if n <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sec := r.now().Unix()
	i := ((sec % rateBuckets) + rateBuckets) % rateBuckets
	if r.seconds[i] != sec {
		r.seconds[i], r.counts[i] = sec, 0
	}
	r.counts[i] += uint64(n)
	r.total += uint64(n)
}

// read is the total counted and the rate a second over the window.
func (r *rateCounter) read() (total uint64, perSecond float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sec := r.now().Unix()
	var sum uint64
	for i, s := range r.seconds {
		if age := sec - s; age >= 0 && age < rateBuckets {
			sum += r.counts[i]
		}
	}
	return r.total, float64(sum) / rateWindow.Seconds()
}

// tenantsDownNow is the tenants whose database this process cannot reach
// now.
func (a *Allocator) tenantsDownNow() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.down)
}

// Info is the process's answer to subjects.SubjectWorkersInfo now.
func (a *Allocator) Info() subjects.WorkerInfo {
	a.scaleMu.Lock()
	scale, rs := a.scale, a.running
	a.scaleMu.Unlock()
	inFlight := 0
	if rs != nil {
		inFlight = rs.limit.inFlight()
	}
	settled, rate := a.settled.read()
	return subjects.WorkerInfo{ID: a.info.id, Host: a.info.host, PID: a.info.pid, Version: a.info.version,
		Command: a.info.command, Started: a.info.started, Concurrency: scale.n, ConcurrencySource: scale.source,
		SettingsRevision: scale.rev, BatchSize: a.batch, Writing: a.writingNow(), InFlight: inFlight,
		Settled: settled, Rate: rate, RateWindow: rateWindow, TenantsDown: a.tenantsDownNow()}
}

// serveInfo answers subjects.SubjectWorkersInfo on the allocators'
// connection until the returned stop. A subscription the connection
// refuses (closed) is logged: the allocators run without it.
func (a *Allocator) serveInfo() (stop func()) {
	sub, err := a.js.Conn().Subscribe(subjects.SubjectWorkersInfo, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		body, err := subjects.EncodeWorkerInfo(a.Info())
		if err == nil {
			err = m.Respond(body)
		}
		if err != nil {
			a.log.Debug("worker info not answered", slog.Any("err", err))
		}
	})
	if err != nil {
		a.log.Warn("cannot answer worker info requests", slog.String("subject", subjects.SubjectWorkersInfo),
			slog.Any("err", err))
		return func() {}
	}
	return func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			a.log.Debug("worker info unsubscribe", slog.Any("err", err))
		}
	}
}

// pollStats sets the backlog and dead-letter gauges every StatsInterval
// until ctx is done. Without metrics it does nothing.
func (a *Allocator) pollStats(ctx context.Context) {
	if a.m == nil {
		return
	}
	streams := map[string]jetstream.Stream{}
	tick := time.NewTicker(a.stats)
	defer tick.Stop()
	for {
		a.readStats(ctx, streams)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// readStats reads each consumer's backlog (pending plus ack pending) and
// the age of its oldest unsettled record (the stream message after its
// ack floor, when anything is pending), then the dead-letter stream's
// depth. A read that fails leaves that gauge as it was, and is logged at
// debug: NATS unreachable shows elsewhere.
func (a *Allocator) readStats(ctx context.Context, streams map[string]jetstream.Stream) {
	stream := func(name string) (jetstream.Stream, error) {
		if s := streams[name]; s != nil {
			return s, nil
		}
		sctx, cancel := withNATSDeadline(ctx)
		defer cancel()
		s, err := a.js.Stream(sctx, name)
		if err == nil {
			streams[name] = s
		}
		return s, err
	}
	for _, sh := range append(append([]*allocShard(nil), a.shards...), a.parked) {
		label, filter := backlogParked, ">"
		if !sh.isParked() {
			label, filter = backlogSlots(sh.index), sh.cfg.FilterSubject
		}
		cctx, cancel := withNATSDeadline(ctx)
		c, err := a.js.Consumer(cctx, sh.stream, sh.cfg.Durable)
		cancel()
		if err != nil {
			a.log.Debug("backlog not read", slog.String("consumer", sh.cfg.Durable), slog.Any("err", err))
			continue
		}
		info := c.CachedInfo()
		records := info.NumPending + uint64(max(info.NumAckPending, 0))
		var oldest time.Duration
		if records > 0 {
			s, err := stream(sh.stream)
			if err == nil {
				gctx, cancel := withNATSDeadline(ctx)
				var m *jetstream.RawStreamMsg
				m, err = s.GetMsg(gctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(filter))
				cancel()
				if err == nil {
					oldest = time.Since(m.Time)
				}
			}
			if err != nil {
				a.log.Debug("oldest record not read", slog.String("consumer", sh.cfg.Durable), slog.Any("err", err))
			}
		}
		a.m.backlogOf(label, records, oldest)
	}
	s, err := stream(subjects.StreamDeadLetters)
	if err != nil {
		a.log.Debug("dead-letter depth not read", slog.Any("err", err))
		return
	}
	ictx, cancel := withNATSDeadline(ctx)
	info, err := s.Info(ictx)
	cancel()
	if err != nil {
		a.log.Debug("dead-letter depth not read", slog.Any("err", err))
		return
	}
	a.m.deadLetterDepth(info.State.Msgs)
}
