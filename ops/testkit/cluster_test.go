package testkit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
)

// TestClusterSurvivesItsLeader checks the facts the cluster fault tests
// rest on: an R3 bucket keeps taking writes once its leader node stops;
// a write acknowledged before the stop is still there; an only-if-absent
// create on a replicated bucket maps to jetstream.ErrKeyExists (the server
// code differs from R1's); and the node comes back on its store.
func TestClusterSurvivesItsLeader(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 90*time.Second)
	c := testkit.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	var kv jetstream.KeyValue
	c.Place("the R3 bucket", func(ctx context.Context) (err error) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "R3TEST", Replicas: 3})
		return err
	})
	if _, err := kv.Create(ctx, "before", []byte("1")); err != nil {
		t.Fatalf("create before: %v", err)
	}
	if _, err := kv.Create(ctx, "before", []byte("2")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("second create on R3: %v, want ErrKeyExists", err)
	}

	info, err := js.Stream(ctx, "KV_R3TEST")
	if err != nil {
		t.Fatal(err)
	}
	leader := c.Index(info.CachedInfo().Cluster.Leader)
	if leader < 0 {
		t.Fatalf("no leader among the nodes: %+v", info.CachedInfo().Cluster)
	}
	stopped := time.Now()
	c.Stop(leader)
	// A new leader is elected among the two left; writes go on.
	// Each try with its own deadline: a publish sent while the stream has
	// no leader gets no answer at all.
	testkit.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := kv.Put(ctx, "after", []byte("1"))
		return err == nil
	}, "a write after the leader stopped")
	t.Logf("R3 bucket took writes again %s after its leader %s stopped", time.Since(stopped), c.Name(leader))
	if e, err := kv.Get(ctx, "before"); err != nil || string(e.Value()) != "1" {
		t.Fatalf("acknowledged write after the stop: %v, %v", e, err)
	}

	c.Start(leader)
	if c.Server(leader) == nil {
		t.Fatal("node not running after Start")
	}
	if _, err := kv.Create(ctx, "after", []byte("2")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("create of a key written during the outage: %v, want ErrKeyExists", err)
	}
}
