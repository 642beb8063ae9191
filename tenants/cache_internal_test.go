package tenants

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
)

// TestCacheFollowsWatchAcrossRestart: one watch serves many updates; a
// server restart starts a new watch (the old one does not recover by
// itself) and the cache keeps following the bucket.
func TestCacheFollowsWatchAcrossRestart(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	ctx := testkit.Context(t, 30*time.Second)
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "TEST_CACHE", LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k.before", "0"); err != nil {
		t.Fatal(err)
	}
	c := &cache[string]{
		kv: kv, filter: "k.*", nc: js.Conn(), log: testkit.Logger(t),
		id:     func(key string) (string, bool) { return key[2:], true },
		decode: func(b []byte) (string, error) { return string(b), nil },
	}
	testkit.Run(t, "cache", c.run)
	testkit.WaitStarted(t, 5*time.Second, c.startedChan(), "the cache's first snapshot")
	if v, ok := c.get("before"); !ok || v != "0" {
		t.Fatalf("snapshot lacks k.before: %q %v", v, ok)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.PutString(ctx, "k."+k, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "k.a"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		_, hasA := c.get("a")
		return !hasA && c.len() == 3
	}, "updates and the delete applied")
	if n := c.restarts.Load(); n != 0 {
		t.Errorf("%d watch restarts for a quiet bucket, want none", n)
	}

	n.Restart()
	testkit.Eventually(t, 10*time.Second, func() bool { return c.restarts.Load() >= 1 }, "a new watch after the restart")
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, err := kv.PutString(ctx, "k.after", "1")
		return err == nil
	}, "write after restart")
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, ok := c.get("after")
		return ok && v == "1"
	}, "cache follows updates after the restart")
}
