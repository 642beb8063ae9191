package main_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/subjects"
)

// faultLoad drives concurrent creates and cancels of one tenant through
// clients of a History until stopped, for the fault tests: each worker
// creates tickets of every type in turn and cancels about one 201 in four.
// It is bounded by maxRequests so that a stuck phase cannot run away.
type faultLoad struct {
	h      *testkit.History
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	live []string // tickets answered 201 and not cancelled by the load
	sent int
}

func startFaultLoad(t *testing.T, h *testkit.History, clients []*testkit.Client, maxRequests int) *faultLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &faultLoad{h: h, cancel: cancel}
	types := []string{"BRONZE", "SILVER", "GOLD", "BRONZE"}
	for i, c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil && l.take(maxRequests); n++ {
				if n%4 == 3 {
					if id, ok := l.pick(); ok {
						c.Cancel(context.Background(), id)
						continue
					}
				}
				// Requests in flight at stop finish (each has the client's
				// timeout), so stopping leaves no answer cut off.
				r := c.Create(context.Background(), types[(i+n)%len(types)])
				if r.First.Status == http.StatusCreated && r.First.Ticket != nil {
					l.mu.Lock()
					l.live = append(l.live, r.First.Ticket.ID)
					l.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

// take counts one request against the bound; false once it is reached.
func (l *faultLoad) take(maxRequests int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent >= maxRequests {
		return false
	}
	l.sent++
	return true
}

// pick removes and returns a random live ticket to cancel.
func (l *faultLoad) pick() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.live) == 0 {
		return "", false
	}
	i := rand.IntN(len(l.live))
	id := l.live[i]
	l.live[i] = l.live[len(l.live)-1]
	l.live = l.live[:len(l.live)-1]
	return id, true
}

// stop ends the load and waits for the requests in flight (idempotent).
func (l *faultLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// phase counts the creates sent in [from, to) (to zero: no end) by their
// first answer.
type phase struct {
	creates, created, rejected, unanswered, other int
	cancels, cancelled                            int
	firstCreated, lastCreated                     time.Time // answer times of 201s
	// failed counts the answers other than 201/409 and 200 by request
	// kind, status and error code ("cancel 503 unavailable").
	failed map[string]int
}

func (p phase) String() string {
	s := fmt.Sprintf("creates %d (201 %d, 409 %d, no answer or 5xx %d, other %d), cancels %d (200 %d)",
		p.creates, p.created, p.rejected, p.unanswered, p.other, p.cancels, p.cancelled)
	if len(p.failed) > 0 {
		s += fmt.Sprintf("; failed: %v", p.failed)
	}
	return s
}

func (l *faultLoad) phase(from, to time.Time) phase {
	p := phase{failed: map[string]int{}}
	fail := func(r testkit.Request) {
		what := r.First.Code
		if r.First.Status == 0 {
			what = "no answer"
		}
		p.failed[fmt.Sprintf("%s %d %s", r.Kind, r.First.Status, what)]++
	}
	for _, r := range l.h.Requests() {
		if r.Sent.Before(from) || (!to.IsZero() && !r.Sent.Before(to)) {
			continue
		}
		if r.Kind == testkit.KindCancel {
			p.cancels++
			if r.First.Status == http.StatusOK {
				p.cancelled++
			} else {
				fail(r)
			}
			continue
		}
		if s := r.First.Status; s != http.StatusCreated && s != http.StatusConflict {
			fail(r)
		}
		p.creates++
		switch s := r.First.Status; {
		case s == http.StatusCreated:
			p.created++
			if p.firstCreated.IsZero() || r.First.At.Before(p.firstCreated) {
				p.firstCreated = r.First.At
			}
			if r.First.At.After(p.lastCreated) {
				p.lastCreated = r.First.At
			}
		case s == http.StatusConflict:
			p.rejected++
		case s == 0 || s >= 500:
			p.unanswered++
		default:
			p.other++
		}
	}
	return p
}

// waitCreated waits until n creates sent at or after from were answered 201.
func (l *faultLoad) waitCreated(t *testing.T, from time.Time, n int, timeout time.Duration, what string) {
	t.Helper()
	testkit.Eventually(t, timeout, func() bool { return l.phase(from, time.Time{}).created >= n },
		fmt.Sprintf("%d creates answered 201 %s", n, what))
}

// waitDrained waits until the allocators have taken every slot record:
// nothing pending or unacknowledged on any shard's consumer, and nothing
// left parked (a parked record is deleted once written).
func waitDrained(t *testing.T, js jetstream.JetStream, timeout time.Duration) {
	t.Helper()
	var last string
	testkit.Eventually(t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var pending, ackPending, redelivered uint64
		for i := range subjects.DefaultSlotShards {
			c, err := js.Consumer(ctx, subjects.SlotStream(i), subjects.AllocatorConsumer(i))
			if err != nil {
				last = err.Error()
				return false
			}
			ci, err := c.Info(ctx)
			if err != nil {
				last = err.Error()
				return false
			}
			pending, ackPending, redelivered = pending+ci.NumPending, ackPending+uint64(ci.NumAckPending), redelivered+uint64(ci.NumRedelivered)
		}
		var parked uint64
		if s, err := js.Stream(ctx, subjects.StreamParked); err == nil {
			parked = s.CachedInfo().State.Msgs
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("pending %d, ack pending %d, redelivered %d, parked %d", pending, ackPending, redelivered, parked)
		return pending == 0 && ackPending == 0 && parked == 0
	}, "the allocators to drain the slot buckets and the parked records")
	t.Logf("drained: %s", last)
}

// readyz returns /readyz's status code and its "status" field.
func readyz(a *api) (int, string) {
	code, body := a.do(http.MethodGet, "/readyz", "", nil)
	s, _ := body["status"].(string)
	return code, s
}

// agents adds n more available agents to the tenant.
func addAgents(t *testing.T, pub *api, token, clientID string, n int) {
	t.Helper()
	for i := range n {
		pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": clientID, "name": fmt.Sprintf("Agent %d", i+2)})
	}
}

// count is how many log lines so far have the message msg.
func (p *proc) count(msg string) int {
	return p.countWhere(msg, func(map[string]any) bool { return true })
}

// countWhere is how many log lines so far have the message msg and
// satisfy ok.
func (p *proc) countWhere(msg string, ok func(line map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if l["msg"] == msg && ok(l) {
			n++
		}
	}
	return n
}
