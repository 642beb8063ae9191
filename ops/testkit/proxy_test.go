package testkit_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"tms/ops/testkit"
)

// echoServer answers every line with itself until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func TestProxyCutAndRestore(t *testing.T) {
	t.Parallel()
	p := testkit.NewProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return p.Live() == 1 }, "one live connection")

	p.Cut()
	if got, err := roundTrip(c, "after cut"); err == nil {
		t.Fatalf("a live connection survived Cut: %q", got)
	}
	// New connections are accepted and closed at once: nothing gets through.
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		defer c2.Close()
		if got, err := roundTrip(c2, "while cut"); err == nil {
			t.Fatalf("a new connection got through while cut: %q", got)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return p.Live() == 0 }, "no live connection")

	p.Restore()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "again"); err != nil || got != "again\n" {
		t.Fatalf("after Restore: %q, %v", got, err)
	}
}
