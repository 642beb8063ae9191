// Package testkit holds the helpers every test shares: an embedded
// JetStream server on a random port with a temp store, throwaway Postgres
// databases, a slog logger writing to t.Log and a fake clock.
//
// It imports nothing of ours but ops/embedded, so any package's internal
// tests can use it without an import cycle.
package testkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Logger returns a logger that writes through t.Log, so output shows only
// for failing (or -v) tests and is attributed to the right test. For a
// *testing.F it discards: parts built once for a fuzz target log from
// their own goroutines while inputs run, when F's methods must not be
// called (they panic, and race with the fuzzing loop).
func Logger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.F); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(&tWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu sync.Mutex
	t  testing.TB
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Helper()
	// t.Log panics after the test has finished; late log lines from
	// goroutines that are still stopping are dropped instead.
	defer func() { _ = recover() }()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// Context returns a context cancelled when the test ends, bounded by
// timeout so that a stuck test fails instead of hanging CI.
func Context(t testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// RandomSuffix returns n random lower-case hex characters, for unique names.
func RandomSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// Clock is a fake clock for code that takes a `func() time.Time`.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t0.
func NewClock(t0 time.Time) *Clock { return &Clock{now: t0} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Eventually polls cond until it is true or the timeout passes, for
// conditions that settle through a watch or another process. It waits on
// the condition, not on a fixed sleep: the first true return ends it.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func sanitize(name string) string {
	name = strings.ToLower(name)
	var b strings.Builder
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 20 {
		s = s[:20]
	}
	return s
}
