package testkit_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a helper leaves a goroutine behind (a
// cluster node, a proxy pipe) after the tests that used it ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
