package workers

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// progressMsg counts InProgress calls; every other method is unused.
type progressMsg struct {
	jetstream.Msg
	calls atomic.Int64
}

func (m *progressMsg) InProgress() error {
	m.calls.Add(1)
	return nil
}

// TestKeepAliveTimerFiresEarly: the keep-alive callback may run before
// AfterFunc returned (a worker resumed after SIGSTOP fires its overdue
// timers at once); it must see its timer assigned. A tiny ack wait makes
// the callback race the assignment on every call; -race catches a read
// that is not ordered after the write (the fault test
// TestFaultWorkerPaused found it through the binary).
func TestKeepAliveTimerFiresEarly(t *testing.T) {
	t.Parallel()
	a := &Allocator{ackWait: 3 * time.Nanosecond}
	for range 200 {
		m := &progressMsg{}
		stop := a.keepAlive(m)
		for m.calls.Load() == 0 {
			time.Sleep(time.Microsecond)
		}
		stop()
	}
}
