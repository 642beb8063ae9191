package ingress

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// startServer runs a Server on a loopback port with the given header
// timeout, answering 200 {"status":"ok"}; stopped at cleanup.
func startServer(t *testing.T, headerTimeout time.Duration) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := NewServer("test", ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
	}), testkit.Logger(t))
	s.srv.ReadHeaderTimeout = headerTimeout
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// roundTrip sends a raw request on a new connection and reads the status.
func roundTrip(t *testing.T, addr, raw string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// waitClosed reads from conn until the server closes it and returns how
// long that took; ok is false when a safety deadline far beyond the
// server's passed first, so a server that never cuts off is a failure,
// not a hang.
func waitClosed(conn net.Conn, start time.Time) (d time.Duration, ok bool) {
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	if ne, isNet := errors.AsType[net.Error](err); isNet && ne.Timeout() {
		return 0, false
	}
	return time.Since(start), true
}

// A client that sends part of its headers and stops, or trickles them a
// byte at a time, is cut off at ReadHeaderTimeout however it paces them,
// and while such clients hang on, others are served.
func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	// cutBound is far above the timeout (a loaded 2-core machine) and far
	// below what a server without the deadline would take: the trickle
	// lasts 10 s, the stalled clients 20 s.
	const cutBound = 5 * time.Second
	s := startServer(t, timeout)
	addr := s.Addr().String()

	// Ten clients that never finish their headers.
	type stalled struct {
		conn  net.Conn
		start time.Time
	}
	var stalls []stalled
	for range 10 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "POST /create_ticket HTTP/1.1\r\nHost: tms\r\nContent-Ty"); err != nil {
			t.Fatalf("write: %v", err)
		}
		stalls = append(stalls, stalled{conn, start})
	}
	// They hold no one up.
	if got := roundTrip(t, addr, "GET /healthz HTTP/1.1\r\nHost: tms\r\nConnection: close\r\n\r\n"); got != http.StatusOK {
		t.Fatalf("a normal request beside stalled clients: %d", got)
	}
	for i, st := range stalls {
		d, ok := waitClosed(st.conn, st.start)
		if !ok {
			t.Fatalf("stalled client %d: the server kept its connection for 20s", i)
		}
		// Only an upper bound, and a loose one: the server's deadline
		// starts at its accept, which can come before this side's start,
		// and a loaded machine delays the close. What matters is that the
		// connection is cut, long before the 20 s safety deadline.
		if d > cutBound {
			t.Errorf("stalled client %d cut off after %s, want within %s (ReadHeaderTimeout %s)", i, d, cutBound, timeout)
		}
	}

	// A client that keeps sending, one byte every 50 ms: each byte would
	// renew a per-read idle timeout, but the header deadline is absolute.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	start := time.Now()
	type cut struct {
		after time.Duration
		ok    bool
	}
	closed := make(chan cut, 1)
	go func() {
		d, ok := waitClosed(conn, start)
		closed <- cut{d, ok}
	}()
	header := "GET /healthz HTTP/1.1\r\nHost: tms\r\nX-Slow: " + strings.Repeat("a", 200) + "\r\n\r\n" // 10 s at this pace
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var got *cut
trickle:
	for i := 0; i < len(header); i++ {
		select {
		case c := <-closed:
			got = &c
			break trickle
		case <-tick.C:
		}
		if _, err := conn.Write([]byte{header[i]}); err != nil {
			c := <-closed
			got = &c
			break
		}
	}
	if got == nil {
		t.Fatal("a client trickling its headers was served to the end")
	}
	if !got.ok || got.after > cutBound {
		t.Fatalf("trickling client cut off after %s (ok %v), want within %s (ReadHeaderTimeout %s)", got.after, got.ok, cutBound, timeout)
	}
}

// Headers beyond MaxHeaderBytes (16 KiB; net/http allows 4 KiB of slack)
// are refused with 431 before any handler runs; headers within it are
// served.
func TestOversizedHeadersAreRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t, readHeaderTimeout)
	addr := s.Addr().String()
	request := func(headerBytes int) string {
		return "GET /healthz HTTP/1.1\r\nHost: tms\r\nConnection: close\r\nX-Big: " +
			strings.Repeat("a", headerBytes) + "\r\n\r\n"
	}
	if got := roundTrip(t, addr, request(8<<10)); got != http.StatusOK {
		t.Fatalf("8 KiB of headers: %d, want 200", got)
	}
	if got := roundTrip(t, addr, request(maxHeaderBytes+8<<10)); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("%d bytes of headers: %d, want 431", maxHeaderBytes+8<<10, got)
	}
}
