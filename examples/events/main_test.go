package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
)

// syncBuffer is a bytes.Buffer safe to read while run writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventsSubscriber: the example prints its tenant's valid events, one
// JSON line each, skips (and says so) a body that does not decode or
// names another tenant, never sees another tenant's subject, and exits
// after -n events.
func TestEventsSubscriber(t *testing.T) {
	t.Parallel()
	srv := testkit.StartNATS(t)
	pub := srv.Connect(t)
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(testkit.Context(t, 30*time.Second), []string{"-s", srv.URL(), "-n", "2", "ca"}, &stdout, &stderr)
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(stderr.String(), "subscribed to tms.events.ca.*") },
		"the subscriber subscribed")

	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	life := subjects.LifecycleEvent{Event: subjects.EventAccepted, Tenant: "ca", Ticket: "t1", Type: subjects.Gold,
		Agent: "a1", SlotTime: at, Deadline: at.Add(2 * time.Hour), CreatedAt: at}
	accepted := subjects.AcceptedEvent{LifecycleEvent: life}
	life.Event = subjects.EventCancelled
	cancelled := subjects.CancelledEvent{LifecycleEvent: life, CancelledAt: at.Add(time.Minute)}
	other := accepted
	other.Tenant = "cb"
	body := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	publish := func(subject string, data []byte) {
		if err := pub.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	publish(subjects.EventSubject("cb", subjects.EventAccepted), body(other))    // another tenant's
	publish(subjects.EventSubject("ca", subjects.EventAccepted), body(other))    // in ca's name, of cb
	publish(subjects.EventSubject("ca", subjects.EventAccepted), []byte("{bad")) // not JSON
	publish(subjects.EventSubject("ca", subjects.EventAccepted), body(accepted))
	publish(subjects.EventSubject("ca", subjects.EventCancelled), body(cancelled))
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v (stderr %s)", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not exit after 2 events; stdout %q stderr %q", stdout.String(), stderr.String())
	}
	want := string(body(accepted)) + "\n" + string(body(cancelled)) + "\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
	}
	if got := strings.Count(stderr.String(), "skipped a message on tms.events.ca.accepted"); got != 2 {
		t.Errorf("stderr reports %d skipped messages, want 2:\n%s", got, stderr.String())
	}
}

func TestEventsSubscriberRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"a", "b"}, {"C.A"}, {"tms.events.>"}, {"-n", "-1", "ca"}} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), append([]string{"-s", "nats://127.0.0.1:1"}, args...), &out, &errs); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
