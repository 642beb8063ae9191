package ops_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"tms/ops"
	"tms/ops/testkit"
)

func TestReadiness(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 30e9)
	loaded := false
	nc := testkit.StartNATS(t).Connect(t)
	ready := ops.Readiness(
		ops.NATSConnected(nc),
		ops.Flag("registry", func() bool { return loaded }),
		ops.Check{Name: "custom", Check: func(context.Context) error { return nil }},
	)
	err := ready(ctx)
	if !errors.Is(err, ops.ErrNotReady) || !strings.Contains(err.Error(), "registry") || strings.Contains(err.Error(), "nats") {
		t.Fatalf("before load: %v", err)
	}
	loaded = true
	if err := ready(ctx); err != nil {
		t.Fatalf("after load: %v", err)
	}
	nc.Close()
	err = ready(ctx)
	if !errors.Is(err, ops.ErrNotReady) || !strings.Contains(err.Error(), "nats: connection CLOSED") {
		t.Fatalf("after close: %v", err)
	}
}
