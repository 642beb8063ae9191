package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// opsStatus is tms ops status's document (--json), and what its tables
// show.
type opsStatus struct {
	Health      string            `json:"health"` // ok or degraded
	Reasons     []string          `json:"reasons,omitempty"`
	NATS        opsNATS           `json:"nats"`
	Streams     []opsStream       `json:"streams"`
	Consumers   []opsConsumer     `json:"consumers"`
	DeadLetters *uint64           `json:"dead_letters"` // nil: the stream is missing
	Workers     []workerView      `json:"workers"`
	Tenants     *int              `json:"tenants"` // nil: unknown (see reasons)
	Errors      map[string]string `json:"errors,omitempty"`
}

type opsNATS struct {
	Server  string   `json:"server"`
	Version string   `json:"version"`
	URL     string   `json:"url"`
	Cluster string   `json:"cluster,omitempty"`
	Servers []string `json:"servers"`
}

// opsStream is one tms stream or KV bucket (the bucket's stream) with its
// replication.
type opsStream struct {
	Name     string `json:"name"`
	Bucket   string `json:"bucket,omitempty"` // the KV bucket a KV_ stream holds
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	Replicas int    `json:"replicas"` // configured
	Leader   string `json:"leader"`
	// Current counts the leader and the replicas up to date; Offline the
	// peers known offline plus those missing from the peer list; Lagging
	// the ones online but behind.
	Current         int      `json:"current"`
	Offline         int      `json:"offline"`
	Lagging         int      `json:"lagging"`
	OfflinePeers    []string `json:"offline_peers,omitempty"`
	UnderReplicated bool     `json:"under_replicated"`
}

type opsConsumer struct {
	Stream      string `json:"stream"`
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	// OldestSeconds is the age of the oldest record not yet settled (the
	// stream's message after the ack floor), 0 when nothing is pending.
	OldestSeconds float64 `json:"oldest_unallocated_seconds"`
	Missing       bool    `json:"missing,omitempty"`
}

// isTMSStream reports whether a stream is one of tms's: its own streams
// (TMS_*) and its KV buckets (KV_TMS_*).
func isTMSStream(name string) bool {
	return strings.HasPrefix(name, "TMS_") || strings.HasPrefix(name, "KV_TMS_")
}

func (c *opsClient) status(ctx context.Context, out io.Writer) error {
	st := opsStatus{Errors: map[string]string{}, Streams: []opsStream{}, Consumers: []opsConsumer{}}
	st.NATS = opsNATS{Server: c.nc.ConnectedServerName(), Version: c.nc.ConnectedServerVersion(),
		URL: c.nc.ConnectedUrlRedacted(), Cluster: c.nc.ConnectedClusterName(), Servers: c.nc.Servers()}
	for i, s := range st.NATS.Servers {
		st.NATS.Servers[i] = strings.TrimPrefix(s, "nats://")
	}
	degraded := func(format string, args ...any) { st.Reasons = append(st.Reasons, fmt.Sprintf(format, args...)) }

	// Workers are gathered while the streams are read: their wait is
	// most of the command's time.
	workersDone := make(chan struct{})
	var workers []workerView
	var workersErr error
	go func() {
		defer close(workersDone)
		workers, workersErr = c.gatherWorkers(ctx, workersWait, 0)
	}()

	shards, err := c.streams(ctx, &st)
	if err != nil {
		<-workersDone
		return err
	}
	var under, offline []string
	for _, s := range st.Streams {
		if s.UnderReplicated {
			under = append(under, fmt.Sprintf("%s (%d of %d current)", s.Name, s.Current, s.Replicas))
			for _, p := range s.OfflinePeers {
				if !slices.Contains(offline, p) {
					offline = append(offline, p)
				}
			}
		}
	}
	if len(under) > 0 {
		r := fmt.Sprintf("%d streams under-replicated: %s", len(under), strings.Join(under, ", "))
		if len(offline) > 0 {
			slices.Sort(offline)
			r += "; offline: " + strings.Join(offline, ", ")
		}
		degraded("%s", r)
	}
	for _, shard := range shards {
		st.Consumers = append(st.Consumers, c.consumer(ctx, subjects.SlotStream(shard), subjects.AllocatorConsumer(shard), &st))
	}
	st.Consumers = append(st.Consumers, c.consumer(ctx, subjects.StreamParked, subjects.ConsumerParked, &st))
	for _, cs := range st.Consumers {
		if cs.Missing {
			degraded("consumer %s on %s missing (no allocator has started)", cs.Name, cs.Stream)
		}
	}
	if info, err := c.streamInfo(ctx, subjects.StreamDeadLetters); err == nil {
		n := info.State.Msgs
		st.DeadLetters = &n
		if n > 0 {
			degraded("%d dead letters (tms ops dlq list)", n)
		}
	} else {
		st.Errors["dead_letters"] = err.Error()
		degraded("dead-letter stream %s: %v", subjects.StreamDeadLetters, err)
	}
	if n, err := c.countTenants(ctx); err == nil {
		st.Tenants = &n
	} else {
		st.Errors["tenants"] = err.Error()
		degraded("tenants: %v", err)
	}

	<-workersDone
	st.Workers = workers
	if st.Workers == nil {
		st.Workers = []workerView{}
	}
	switch {
	case workersErr != nil:
		st.Errors["workers"] = workersErr.Error()
		degraded("workers: %v", workersErr)
	case len(workers) == 0:
		degraded("no worker answered")
	}
	for _, w := range workers {
		if w.TenantsDown > 0 {
			degraded("worker %s cannot reach %d tenant databases", w.ID, w.TenantsDown)
		}
	}
	st.Health = "ok"
	if len(st.Reasons) > 0 {
		st.Health = "degraded"
	}
	if len(st.Errors) == 0 {
		st.Errors = nil
	}
	if c.cfg.JSON {
		return writeJSON(out, st)
	}
	printStatus(out, st)
	return nil
}

// streamInfo is a stream's info, fresh.
func (c *opsClient) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// streams lists tms's streams and buckets into st and returns the slot
// shards found (their KV streams), in order.
func (c *opsClient) streams(ctx context.Context, st *opsStatus) ([]int, error) {
	lister := c.js.ListStreams(ctx)
	var shards []int
	for info := range lister.Info() {
		if !isTMSStream(info.Config.Name) {
			continue
		}
		st.Streams = append(st.Streams, streamView(info))
		if n, ok := strings.CutPrefix(info.Config.Name, "KV_TMS_RESERVATIONS_"); ok {
			if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < 1024 {
				shards = append(shards, i)
			}
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("listing the JetStream streams: %w", err)
	}
	slices.SortFunc(st.Streams, func(a, b opsStream) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(shards)
	if len(shards) == 0 {
		st.Reasons = append(st.Reasons, "no slot bucket (KV_TMS_RESERVATIONS_*): has tms ever started on this NATS?")
	}
	return shards, nil
}

// streamView is a stream's size and replication. A replica the leader
// does not list at all (its node is gone from the peer set) counts as
// offline too.
func streamView(info *jetstream.StreamInfo) opsStream {
	s := opsStream{Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes, Replicas: max(info.Config.Replicas, 1)}
	if b, ok := strings.CutPrefix(s.Name, "KV_"); ok {
		s.Bucket = b
	}
	if info.Cluster == nil {
		// A single server without clustering: it is the one copy.
		s.Current, s.Leader = 1, "-"
		return s
	}
	s.Leader = info.Cluster.Leader
	if s.Leader != "" {
		s.Current = 1
	}
	for _, p := range info.Cluster.Replicas {
		switch {
		case p.Offline:
			s.Offline++
			s.OfflinePeers = append(s.OfflinePeers, p.Name)
		case p.Current:
			s.Current++
		default:
			s.Lagging++
		}
	}
	if missing := s.Replicas - s.Current - s.Offline - s.Lagging; missing > 0 {
		s.Offline += missing
	}
	if s.Leader == "" {
		s.Leader = "NONE"
	}
	s.UnderReplicated = s.Current < s.Replicas
	return s
}

// consumer reads one allocator consumer's backlog. A consumer or stream
// that is missing is reported as such, not as an error of the command.
func (c *opsClient) consumer(ctx context.Context, stream, name string, st *opsStatus) opsConsumer {
	v := opsConsumer{Stream: stream, Name: name}
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		v.Missing = true
		return v
	}
	cons, err := s.Consumer(ctx, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		v.Missing = true
		return v
	}
	if err != nil {
		st.Errors["consumer "+name] = err.Error()
		return v
	}
	info, err := cons.Info(ctx)
	if err != nil {
		st.Errors["consumer "+name] = err.Error()
		return v
	}
	v.Pending, v.AckPending, v.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
	if v.Pending+uint64(v.AckPending) > 0 {
		filter := info.Config.FilterSubject
		if filter == "" && len(info.Config.FilterSubjects) == 1 {
			filter = info.Config.FilterSubjects[0]
		}
		if filter == "" {
			filter = ">"
		}
		// The first message after the ack floor that the consumer
		// takes is the oldest not yet settled (earlier ones may be gone
		// from a work-queue or limits stream).
		msg, err := s.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(filter))
		if err == nil {
			v.OldestSeconds = max(time.Since(msg.Time).Seconds(), 0)
		}
	}
	return v
}

// countTenants counts the tenant records of the registry bucket (its keys
// tenant.<id>; the claims of e-mails and sub-domains are not tenants).
func (c *opsClient) countTenants(ctx context.Context) (int, error) {
	recs, err := c.tenantRecords(ctx)
	return len(recs), err
}

func printStatus(out io.Writer, st opsStatus) {
	health := st.Health
	if len(st.Reasons) > 0 {
		health += ": " + strings.Join(st.Reasons, "; ")
	}
	fmt.Fprintf(out, "health: %s\n\n", health)
	cluster := st.NATS.Cluster
	if cluster == "" {
		cluster = "(none)"
	}
	fmt.Fprintf(out, "NATS: server %s version %s at %s, cluster %s, servers known: %s\n\n", st.NATS.Server, st.NATS.Version,
		st.NATS.URL, cluster, strings.Join(st.NATS.Servers, ","))

	tw := newTable(out)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tREPLICAS\tLEADER\tCURRENT\tOFFLINE\tLAGGING\tSTATE")
	for _, s := range st.Streams {
		state := "ok"
		if s.UnderReplicated {
			state = "UNDER-REPLICATED"
			if len(s.OfflinePeers) > 0 {
				state += " (offline: " + strings.Join(s.OfflinePeers, ",") + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", s.Name, s.Messages, s.Bytes, s.Replicas, s.Leader, s.Current, s.Offline, s.Lagging, state)
	}
	tw.Flush()

	fmt.Fprintln(out)
	tw = newTable(out)
	fmt.Fprintln(tw, "CONSUMER\tSTREAM\tPENDING\tACK PENDING\tREDELIVERED\tOLDEST UNALLOCATED")
	for _, cs := range st.Consumers {
		if cs.Missing {
			fmt.Fprintf(tw, "%s\t%s\tMISSING\t-\t-\t-\n", cs.Name, cs.Stream)
			continue
		}
		oldest := "-"
		if cs.Pending+uint64(cs.AckPending) > 0 {
			oldest = ago(time.Duration(cs.OldestSeconds * float64(time.Second)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", cs.Name, cs.Stream, cs.Pending, cs.AckPending, cs.Redelivered, oldest)
	}
	tw.Flush()

	fmt.Fprintln(out)
	if st.DeadLetters != nil {
		fmt.Fprintf(out, "dead letters: %d\n", *st.DeadLetters)
	} else {
		fmt.Fprintf(out, "dead letters: unknown (%s)\n", st.Errors["dead_letters"])
	}
	if st.Tenants != nil {
		fmt.Fprintf(out, "tenants: %d\n", *st.Tenants)
	} else {
		fmt.Fprintf(out, "tenants: unknown (%s)\n", st.Errors["tenants"])
	}
	fmt.Fprintf(out, "workers online: %d\n", len(st.Workers))
	if len(st.Workers) > 0 {
		fmt.Fprintln(out)
		printWorkers(out, st.Workers)
	}
}
