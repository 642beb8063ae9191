package ops_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops"
	"tms/ops/embedded"
	"tms/ops/testkit"
	"tms/subjects"
)

func TestWaitable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"a plain error", errors.New("bad hold TTL"), false},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), false},
		{"server too old", fmt.Errorf("x: %w", ops.ErrNATSTooOld), false},
		{"no JetStream", ops.ErrNoJetStream, false},
		{"credentials", ops.ErrNATSAuth, false},
		{"no JetStream for the account", jetstream.ErrJetStreamNotEnabledForAccount, false},
		{"replicas on one server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{"bad request", &jetstream.APIError{Code: 400, ErrorCode: 10003}, false},
		{"unreachable", ops.ErrNATSUnreachable, true},
		{"unanswered", fmt.Errorf("opening bucket: %w", context.DeadlineExceeded), true},
		{"no responders", jetstream.ErrJetStreamNotEnabled, true},
		{"no servers", nats.ErrNoServers, true},
		{"lost a create race", fmt.Errorf("x: %w", jetstream.ErrBucketExists), true},
		{"stream gone meanwhile", jetstream.ErrStreamNotFound, true},
		{"cluster unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"peers not known yet", &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{"name in use", &jetstream.APIError{Code: 400, ErrorCode: 10058}, true},
	} {
		if got := ops.Waitable(tc.err); got != tc.want {
			t.Errorf("%s: Waitable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestWaiterRetries(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	w := ops.NewWaiter(testkit.Logger(t))
	calls := 0
	var during string
	err := w.Retry(ctx, "the thing", func(context.Context) error {
		calls++
		if calls == 2 {
			during = w.Waiting()
		}
		if calls < 3 {
			return fmt.Errorf("asking: %w", context.DeadlineExceeded)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want nil after 3", err, calls)
	}
	if !strings.HasPrefix(during, "waiting for the thing: asking: context deadline exceeded") {
		t.Errorf("Waiting() during the wait = %q", during)
	}
	if w.Waiting() != "" {
		t.Errorf("Waiting() after success = %q, want empty", w.Waiting())
	}
}

func TestWaiterGivesUpOnConfigError(t *testing.T) {
	t.Parallel()
	w := ops.NewWaiter(testkit.Logger(t))
	calls := 0
	bad := &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}
	err := w.Retry(testkit.Context(t, 30*time.Second), "JetStream", func(context.Context) error {
		calls++
		return fmt.Errorf("opening bucket: %w", bad)
	})
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("Retry = %v after %d calls, want the configuration error after 1", err, calls)
	}
}

func TestWaiterStopsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(testkit.Context(t, 30*time.Second))
	w := ops.NewWaiter(testkit.Logger(t))
	err := w.Retry(ctx, "NATS", func(context.Context) error {
		cancel() // the signal arrives during the first attempt
		return ops.ErrNATSUnreachable
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Retry = %v, want context.Canceled", err)
	}
}

// freeAddr is a loopback port nothing listens on, kept free for the
// test's own server (testkit.FreePort).
func freeAddr(t *testing.T) (string, int) {
	t.Helper()
	port := testkit.FreePort(t)
	return fmt.Sprintf("127.0.0.1:%d", port), port
}

// TestConnectNATSWaitsForTheServer: with no bound but the context,
// ConnectNATS keeps trying while nothing listens, says so, and connects
// once a server starts there.
func TestConnectNATSWaitsForTheServer(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 60*time.Second)
	addr, port := freeAddr(t)
	w := ops.NewWaiter(testkit.Logger(t))
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := ops.ConnectNATS(ctx, "nats://"+addr, "test", testkit.Logger(t), ops.NATSOptions{Waiter: w})
		done <- result{nc, err}
	}()
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(w.Waiting(), "waiting for NATS") },
		"ConnectNATS waiting for the server")
	srv, err := embedded.Start(embedded.Config{Name: "late", StoreDir: t.TempDir(), Host: "127.0.0.1", Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { embedded.Stop(srv) })
	r := <-done
	if r.err != nil {
		t.Fatalf("ConnectNATS once the server is up: %v", r.err)
	}
	r.nc.Close()
}

// TestConnectNATSWaitsForJetStream: one node of a three-node cluster
// accepts clients but has no JetStream meta leader; ConnectNATS waits
// for JetStream and returns once the cluster has formed.
func TestConnectNATSWaitsForJetStream(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 120*time.Second)
	c := testkit.NewCluster(t, 3)
	if err := <-c.StartNodes(0); err != nil {
		t.Fatal(err)
	}
	w := ops.NewWaiter(testkit.Logger(t))
	done := make(chan error, 1)
	go func() {
		nc, err := ops.ConnectNATS(ctx, c.URLs(), "test", testkit.Logger(t), ops.NATSOptions{Waiter: w})
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	testkit.Eventually(t, 60*time.Second, func() bool { return strings.Contains(w.Waiting(), "waiting for JetStream") },
		"ConnectNATS waiting for JetStream")
	if err := <-c.StartNodes(1, 2); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ConnectNATS once the cluster formed: %v", err)
	}
}

// TestConnectNATSRefusesCredentials: refused credentials end the wait at
// once, with one line naming the flag and not the password.
func TestConnectNATSRefusesCredentials(t *testing.T) {
	t.Parallel()
	srv := testkit.StartNATSWith(t, testkit.NATSConfig{Username: "tms", Password: "right"}).Server
	url := "nats://tms:hunter2@" + srv.Addr().String()
	_, err := ops.ConnectNATS(testkit.Context(t, 60*time.Second), url, "test", testkit.Logger(t), ops.NATSOptions{Flag: "--nats-url"})
	msg := fmt.Sprint(err)
	if !errors.Is(err, ops.ErrNATSAuth) || !strings.Contains(msg, "--nats-url") || strings.Contains(msg, "hunter2") {
		t.Fatalf("got %v, want ErrNATSAuth naming --nats-url without the password", err)
	}
}

// TestProbes: a probe runs in the background, not per read: reading its
// check a thousand times costs no extra run; before the first run it
// fails; its last error is what the check says.
func TestProbes(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	var runs atomic.Int64
	var fail atomic.Bool
	p := ops.NewProbes(ops.Check{Name: "thing", Check: func(context.Context) error {
		runs.Add(1)
		if fail.Load() {
			return errors.New("broken")
		}
		return nil
	}})
	check := p.Checks()[0]
	if err := check.Check(ctx); err == nil {
		t.Fatal("a probe that never ran passes")
	}
	stop := testkit.Run(t, "Probes", p.Run)
	testkit.Eventually(t, 10*time.Second, func() bool { return check.Check(ctx) == nil }, "the first probe")
	before := runs.Load()
	for range 1000 {
		if err := check.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if after := runs.Load(); after-before > 2 {
		t.Fatalf("1000 reads ran the probe %d more times", after-before)
	}
	fail.Store(true)
	testkit.Eventually(t, 10*time.Second, func() bool {
		err := check.Check(ctx)
		return err != nil && err.Error() == "broken"
	}, "the probe's failure")
	stop() // Run's error, if any, fails the test
}

// TestResponderAndStreamProbes against a real server: no responder, then
// one that answers the ping; a stream missing, then there.
func TestResponderAndStreamProbes(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	ns := testkit.StartNATS(t)
	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	responders, stream := ops.ETAResponders(nc), ops.StreamLeader(js, "PROBED")
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := responders.Check(pctx); err == nil || !strings.Contains(err.Error(), "none is running") {
		t.Fatalf("responders with none: %v", err)
	}
	if err := stream.Check(pctx); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing stream: %v", err)
	}
	// A responder's answer, as the real one gives it (workers tests the
	// real one through the binary).
	sub, err := nc.Subscribe(subjects.ETA(subjects.PingTenant), func(m *nats.Msg) { _ = m.Respond([]byte(`{"code":200}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBED", Subjects: []string{"probed"}}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := responders.Check(ctx); err != nil {
		t.Fatalf("responders with one: %v", err)
	}
	if err := stream.Check(ctx); err != nil {
		t.Fatalf("stream with a leader: %v", err)
	}
}

// TestStreamLeaderLost: an R3 stream whose cluster lost two nodes of
// three has no quorum, so it takes no writes; the probe says so.
func TestStreamLeaderLost(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 120*time.Second)
	c := testkit.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	c.Place("the R3 stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3PROBED", Subjects: []string{"r3probed"}, Replicas: 3})
		return err
	})
	probe := ops.StreamLeader(js, "R3PROBED")
	testkit.Eventually(t, 30*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return probe.Check(pctx) == nil
	}, "the R3 stream with a leader")
	c.Stop(1)
	c.Stop(2)
	var last error
	testkit.Eventually(t, 60*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		last = probe.Check(pctx)
		return last != nil && strings.Contains(last.Error(), "leader")
	}, "the probe failing with two nodes of three gone, naming the leader")
	t.Logf("probe with no quorum: %v", last)
}

// TestConnectNATSRefusesAMalformedURL: a URL that does not parse is a
// configuration error, not something to wait for.
func TestConnectNATSRefusesAMalformedURL(t *testing.T) {
	t.Parallel()
	_, err := ops.ConnectNATS(testkit.Context(t, 60*time.Second), "nats://tms:hunter2@127.0.0.1:bad", "test",
		testkit.Logger(t), ops.NATSOptions{Flag: "--nats-url"})
	msg := fmt.Sprint(err)
	if err == nil || ops.Waitable(err) || !strings.Contains(msg, "--nats-url") || strings.Contains(msg, "hunter2") {
		t.Fatalf("got %v, want a configuration error naming --nats-url without the password", err)
	}
}

// TestConnectNATSRefusesJetStreamPermissions: a user the server does not
// let publish to the JetStream API gets no answer at all (only an
// asynchronous permissions error); that ends the wait as a configuration
// error instead of an endless one.
func TestConnectNATSRefusesJetStreamPermissions(t *testing.T) {
	t.Parallel()
	srv := testkit.StartNATSWith(t, testkit.NATSConfig{Username: "tms", Password: "right",
		DenyPublish: []string{"$JS.API.>"}}).Server
	_, err := ops.ConnectNATS(testkit.Context(t, 60*time.Second), "nats://tms:right@"+srv.Addr().String(), "test",
		testkit.Logger(t), ops.NATSOptions{Flag: "--nats-url"})
	if !errors.Is(err, ops.ErrNATSAuth) || !strings.Contains(err.Error(), "permissions violation") {
		t.Fatalf("got %v, want ErrNATSAuth naming the permissions violation", err)
	}
	t.Logf("%v", err)
}
