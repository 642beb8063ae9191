package main_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// TestClusterNodeLoss is the scaled-out shape on a 3-node NATS cluster
// (R3 buckets and streams): tms ingress and two tms workers given every
// node's URL, concurrent creates and cancels with the history checker. The
// node the ingress is connected to, made leader of the tenant's slot
// bucket and of its shard's allocators consumer, is stopped mid-load:
// after a short blip admissions go on; the node comes back on its store;
// once the allocators drained the buckets, every 201 is in the tenant
// database exactly once.
func TestClusterNodeLoss(t *testing.T) {
	t.Parallel()
	began := time.Now()
	prefix := testkit.DatabasePrefix(t)
	c := testkit.StartCluster(t, 3)
	t.Logf("cluster up in %s", time.Since(began).Round(time.Millisecond))
	env := []string{"TMS_NATS_URL=" + c.URLs(), "TMS_DATABASE_URL=" + testkit.PostgresURL(),
		"TMS_REPLICAS=3", "TMS_LOG_FORMAT=json",
		// An ack sent to a consumer leader that dies is lost; the event is
		// redelivered (and found written) after the ack wait: keep it short.
		"TMS_ACK_WAIT=5s"}
	// One worker first, so the R3 streams and buckets are made once.
	w1 := startTMS(t, env, "worker")
	w1.logEvent("eta responder ready")
	w2 := startTMS(t, env, "worker")
	ingress := startTMS(t, env, "ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix)
	listening := ingress.logEvent("listening")
	pub := newAPI(t, str(t, listening, "public"))
	pub.waitReady(ingress)
	w2.logEvent("eta responder ready")

	clientID, token, _ := account(t, pub)
	addAgents(t, pub, token, clientID, 3)

	ctx := testkit.Context(t, 120*time.Second)
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	victim, leads := clusterVictim(ctx, t, c, nc, js, ingress, clientID)

	h := testkit.NewHistory()
	var clients []*testkit.Client
	for range 4 {
		clients = append(clients, h.NewClient(t, "http://"+str(t, listening, "public"), clientID, token, 5*time.Second))
	}
	load := startFaultLoad(t, h, clients, 2000)
	load.waitCreated(t, began, 30, 60*time.Second, "before the node stops")

	stoppedAt := time.Now()
	c.Stop(victim)
	t.Logf("stopped %s (leader of %v) %s into the test", c.Name(victim), leads, stoppedAt.Sub(began).Round(time.Millisecond))
	load.waitCreated(t, stoppedAt, 60, 60*time.Second, "with a node down")
	downFor := time.Now()
	c.Start(victim)
	startedAt := time.Now()
	t.Logf("%s back and healthy %s after its restart began", c.Name(victim), startedAt.Sub(downFor).Round(time.Millisecond))
	load.waitCreated(t, startedAt, 30, 60*time.Second, "after the node is back")
	load.stop()

	// Durability on a cluster rests on every stream and bucket tms made
	// keeping three copies: an ack then means two nodes have the write.
	var r3 []string
	for info := range js.ListStreams(ctx).Info() {
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3 (--replicas 3)", info.Config.Name, info.Config.Replicas)
		}
		r3 = append(r3, info.Config.Name)
	}
	t.Logf("R3 streams and buckets: %v", r3)

	// Resolve first: its retries publish events the allocators must apply
	// before the check reads the rows.
	resolved, left := h.Resolve(ctx)
	waitDrained(t, js, 60*time.Second)
	summary := h.Check(t, ctx, testkit.DatabaseURLs(prefix))

	before, down, after := load.phase(began, stoppedAt), load.phase(stoppedAt, startedAt), load.phase(startedAt, time.Time{})
	t.Logf("before the stop: %s", before)
	t.Logf("node down (%s): %s", startedAt.Sub(stoppedAt).Round(time.Millisecond), down)
	t.Logf("after the restart: %s", after)
	// The blip: from the stop to the first 201 of a request sent after it.
	blip := down.firstCreated.Sub(stoppedAt)
	t.Logf("first 201 of a request sent after the stop came %s after it", blip.Round(time.Millisecond))
	if blip > 15*time.Second {
		t.Errorf("admissions stopped for %s after a node loss", blip)
	}
	t.Logf("resolved %d, left %d; history: %s", resolved, left, summary)
	if left != 0 {
		t.Errorf("%d requests still without a settling answer", left)
	}
	t.Logf("NATS reconnects: ingress %d, workers %d and %d", ingress.count("NATS reconnected"),
		w1.count("NATS reconnected"), w2.count("NATS reconnected"))

	ingress.stop()
	w1.stop()
	w2.stop()
	t.Logf("whole test %s", time.Since(began).Round(time.Millisecond))
}

// clusterVictim picks the node to stop: the one the ingress is connected
// to, made leader (by leader stepdowns with that node preferred) of the
// tenant's slot bucket and its shard's allocators consumer, so
// that its loss costs the ingress its connection and each group its
// leader at once.
func clusterVictim(ctx context.Context, t *testing.T, c *testkit.Cluster, nc *nats.Conn, js jetstream.JetStream,
	ingress *proc, tenant string) (int, []string) {
	t.Helper()
	name := str(t, ingress.logEvent("connected to NATS"), "nats_server")
	victim := c.Index(name)
	if victim < 0 {
		t.Fatalf("the ingress is connected to %q, not a node of the cluster", name)
	}
	shard := subjects.SlotShard(tenant, subjects.DefaultSlotShards)
	slots, consumer := subjects.SlotStream(shard), subjects.AllocatorConsumer(shard)
	groups := []struct {
		name, stepdown string
		leader         func() (*jetstream.ClusterInfo, error) // ctx: a short deadline
	}{
		{slots, "$JS.API.STREAM.LEADER.STEPDOWN." + slots, func() (*jetstream.ClusterInfo, error) {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, slots)
			if err != nil {
				return nil, err
			}
			return s.CachedInfo().Cluster, nil
		}},
		{slots + "/" + consumer,
			"$JS.API.CONSUMER.LEADER.STEPDOWN." + slots + "." + consumer,
			func() (*jetstream.ClusterInfo, error) {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				c, err := js.Consumer(ctx, slots, consumer)
				if err != nil {
					return nil, err
				}
				return c.CachedInfo().Cluster, nil
			}},
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": name}})
	leader := func(g int) string {
		ci, err := groups[g].leader()
		if err != nil || ci == nil {
			return ""
		}
		return ci.Leader
	}
	var names []string
	for g := range groups {
		// One stepdown at a time: asking again before the election is
		// over would only start another.
		for try := 0; leader(g) != name; try++ {
			if try == 5 {
				t.Fatalf("%s still led by %q after %d stepdowns to %s", groups[g].name, leader(g), try, name)
			}
			if m, err := nc.RequestWithContext(ctx, groups[g].stepdown, req); err != nil {
				t.Logf("stepdown of %s: %v", groups[g].name, err)
			} else {
				t.Logf("stepdown of %s to %s: %s", groups[g].name, name, m.Data)
			}
			within(10*time.Second, func() bool { return leader(g) == name })
		}
		names = append(names, groups[g].name)
	}
	return victim, names
}

// within polls cond until it is true (true) or timeout passes (false).
func within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
