package ops_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"tms/ops"
	"tms/ops/testkit"
)

func TestConnectNATSAcceptsEmbeddedServer(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	srv := testkit.StartNATS(t)
	nc, err := ops.ConnectNATS(ctx, srv.URL(), "test", testkit.Logger(t), ops.NATSOptions{Flag: "--nats-url"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ops.Drain(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if !nc.IsClosed() {
		t.Fatal("connection not closed after Drain")
	}

	in, err := ops.ConnectEmbedded(ctx, srv.Server, "test-inproc", testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := ops.Drain(ctx, in); err != nil {
		t.Fatal(err)
	}
}

func TestConnectNATSUnreachable(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	// A port that was free a moment ago: nothing answers there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://user:hunter2@" + ln.Addr().String()
	ln.Close()
	start := time.Now()
	_, err = ops.ConnectNATS(ctx, url, "test", testkit.Logger(t),
		ops.NATSOptions{ConnectTimeout: 300 * time.Millisecond, Flag: "--nats-url"})
	if !errors.Is(err, ops.ErrNATSUnreachable) {
		t.Fatalf("got %v, want ErrNATSUnreachable", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "hunter2") || !strings.Contains(msg, "--nats-url") || strings.Contains(msg, "\n") {
		t.Fatalf("message %q: want one line naming --nats-url without the password", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %s, want about the connect timeout", d)
	}
}

func TestConnectNATSRefusesServerWithoutJetStream(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30*time.Second)
	srv := testkit.StartNATSWith(t, testkit.NATSConfig{NoJetStream: true}).Server
	_, err := ops.ConnectNATS(ctx, srv.ClientURL(), "test", testkit.Logger(t), ops.NATSOptions{Flag: "--nats-url"})
	if !errors.Is(err, ops.ErrNoJetStream) || !strings.Contains(err.Error(), "--nats-url") {
		t.Fatalf("got %v, want ErrNoJetStream naming --nats-url", err)
	}
}
