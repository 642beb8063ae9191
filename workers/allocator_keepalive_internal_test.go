package workers

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// progressMsg signals its first InProgress call; every other method is
// unused.
type progressMsg struct {
	jetstream.Msg
	once   sync.Once
	called chan struct{}
}

func (m *progressMsg) InProgress() error {
	m.once.Do(func() { close(m.called) })
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
		m := &progressMsg{called: make(chan struct{})}
		stop := a.keepAlive(m)
		<-m.called // the callback ran at least once
		stop()
	}
}
