package ingress

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Nothing is ignored: every server, NATS connection and Run loop a test
	// starts is stopped in its Cleanup.
	goleak.VerifyTestMain(m)
}
