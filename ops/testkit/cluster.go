package testkit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/embedded"
)

// Cluster is a JetStream cluster of embedded servers on loopback ports,
// each with its own store (fsync on every write, as tms serve runs), for
// tests that stop a node mid-load. Stop and Start keep a node's ports and
// store, as a machine restart would.
type Cluster struct {
	t       testing.TB
	name    string
	mu      sync.Mutex
	servers []*server.Server // nil while stopped
	configs []embedded.Config
}

// StartCluster starts n servers named n1..nN that route to each other, and
// waits until JetStream has a meta leader. They stop when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := NewCluster(t, n)
	if err := <-c.StartAll(); err != nil {
		t.Fatalf("start cluster %s: %v", c.name, err)
	}
	c.waitMetaLeader()
	return c
}

// NewCluster configures n servers named n1..nN on free loopback ports
// that route to each other, and starts none: URLs is known at once, so a
// test can start its clients before (or while) the cluster forms. They
// stop when the test ends.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, name: "tmst-" + RandomSuffix(6), servers: make([]*server.Server, n)}
	ports := FreePorts(t, 2*n)
	clientPorts, clusterPorts := ports[:n], ports[n:]
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i])
	}
	dir := t.TempDir()
	for i := range n {
		c.configs = append(c.configs, embedded.Config{
			Name: fmt.Sprintf("n%d", i+1), StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Host: "127.0.0.1", Port: clientPorts[i],
			ClusterName: c.name, ClusterHost: "127.0.0.1", ClusterPort: clusterPorts[i], Routes: routes,
			ReadyTimeout: 20 * time.Second,
		})
	}
	t.Cleanup(c.stopAll)
	return c
}

// StartAll starts every node at once in the background (StartNodes).
func (c *Cluster) StartAll() <-chan error {
	all := make([]int, len(c.configs))
	for i := range all {
		all[i] = i
	}
	return c.StartNodes(all...)
}

// StartNodes starts the given nodes at once in the background and returns
// at once; the channel gets nil when each of them accepts clients
// (JetStream may still be electing its meta leader, and has none while
// fewer than a quorum run), or the nodes' errors.
func (c *Cluster) StartNodes(nodes ...int) <-chan error {
	done := make(chan error, 1)
	go func() {
		// Concurrently: a node waits for its routes before it is ready.
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for k, i := range nodes {
			wg.Go(func() {
				if err := c.start(i); err != nil {
					errs[k] = fmt.Errorf("node %s: %w", c.Name(i), err)
				}
			})
		}
		wg.Wait()
		done <- errors.Join(errs...)
	}()
	return done
}

func (c *Cluster) start(i int) error {
	srv, err := embedded.Start(c.configs[i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.servers[i] = srv
	c.mu.Unlock()
	return nil
}

// jetStream is a JetStream client on a connection of its own to the
// cluster, and the func that closes it.
func (c *Cluster) jetStream() (jetstream.JetStream, func()) {
	c.t.Helper()
	nc := c.Connect(c.t)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		c.t.Fatalf("jetstream: %v", err)
	}
	return js, nc.Close
}

// runningLocked is how many nodes run; c.mu is held.
func (c *Cluster) runningLocked() int {
	n := 0
	for _, srv := range c.servers {
		if srv != nil {
			n++
		}
	}
	return n
}

// waitMetaLeader retries a JetStream call until the cluster answers it:
// ReadyForConnections does not wait for the meta leader election.
func (c *Cluster) waitMetaLeader() {
	c.t.Helper()
	js, closeJS := c.jetStream()
	defer closeJS()
	Eventually(c.t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	}, "a JetStream meta leader in cluster "+c.name)
	c.waitPeers()
}

// waitPeers waits until the meta leader counts every running node as an
// online JetStream peer: before that, creating an R3 stream can fail with
// "no suitable peers for placement".
func (c *Cluster) waitPeers() {
	c.t.Helper()
	Eventually(c.t, 30*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		running := c.runningLocked()
		for _, srv := range c.servers {
			if srv != nil && srv.JetStreamIsLeader() {
				return len(srv.JetStreamClusterPeers()) == running
			}
		}
		return false
	}, "every running node an online JetStream peer of cluster "+c.name)
	c.waitPlacement()
}

// waitPlacement creates and deletes a probe file stream with a replica on
// every running node until the meta leader places it: a peer can be
// counted before the leader has seen it online ("no suitable peers for
// placement, peer offline" a moment later), and what callers do next is
// create streams and buckets of that many replicas.
func (c *Cluster) waitPlacement() {
	c.t.Helper()
	c.mu.Lock()
	running := c.runningLocked()
	c.mu.Unlock()
	js, closeJS := c.jetStream()
	defer closeJS()
	var last error
	Eventually(c.t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, last = js.CreateStream(ctx, jetstream.StreamConfig{Name: "TESTKIT_PLACEMENT_PROBE",
			Subjects: []string{"testkit.placement.probe"}, Storage: jetstream.FileStorage, Replicas: running})
		if last != nil {
			return false
		}
		if err := js.DeleteStream(ctx, "TESTKIT_PLACEMENT_PROBE"); err != nil {
			last = err
			return false
		}
		return true
	}, fmt.Sprintf("a stream of %d replicas placed in cluster %s", running, c.name))
}

// Place runs create (a stream or bucket of this cluster's replicas) until
// the meta leader places it, for tests that make their own replicated
// assets: on a loaded machine the leader can count a running peer offline
// for a moment after waitPlacement succeeded (its statistics are late),
// and answers "no suitable peers for placement" (10005), which production
// start-up waits out too. Any other error ends the test.
func (c *Cluster) Place(what string, create func(ctx context.Context) error) {
	c.t.Helper()
	var last error
	Eventually(c.t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		last = create(ctx)
		var apiErr *jetstream.APIError
		if last != nil && !(errors.As(last, &apiErr) && apiErr.ErrorCode == 10005) {
			c.t.Fatalf("create %s: %v", what, last)
		}
		return last == nil
	}, fmt.Sprintf("%s placed in cluster %s", what, c.name))
}

// URLs is every node's client URL, comma-separated (what --nats-url takes).
// A stopped node's URL stays listed: clients skip it until it is back.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.configs))
	for i, cfg := range c.configs {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", cfg.Port)
	}
	return strings.Join(urls, ",")
}

// Name is node i's server name (n1..nN), as stream info names a leader.
func (c *Cluster) Name(i int) string { return c.configs[i].Name }

// Index is the node whose server name is name, or -1.
func (c *Cluster) Index(name string) int {
	for i, cfg := range c.configs {
		if cfg.Name == name {
			return i
		}
	}
	return -1
}

// Server is node i's running server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Stop shuts node i down (idempotent), as a crash of its machine would
// look to clients and peers; its store stays for Start.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if srv != nil {
		embedded.Stop(srv)
	}
}

// Start starts a stopped node i again on its ports and store, and waits
// until it has caught up with the cluster's JetStream state (its health
// check passes), so that stopping another node next keeps a quorum.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		return
	}
	if err := c.start(i); err != nil {
		c.t.Fatalf("restart cluster node %s: %v", c.Name(i), err)
	}
	srv := c.Server(i)
	Eventually(c.t, 60*time.Second, func() bool {
		return srv.Healthz(nil).Status == "ok"
	}, "node "+c.Name(i)+" healthy after restart")
	c.waitPeers()
}

// Connect opens a client connection to the whole cluster that reconnects
// forever (so it rides out Stop) and is closed when the test ends.
func (c *Cluster) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("connect to cluster %s: %v", c.name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.configs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Stop(i)
		}()
	}
	wg.Wait()
}
