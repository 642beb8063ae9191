package jsbench_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a benchmark leaves a server, a client
// connection or a publisher goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
