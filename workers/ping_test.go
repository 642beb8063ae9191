package workers_test

import (
	"net/http"
	"testing"

	"tms/subjects"
)

// TestResponderAnswersPing: the readiness probe of an ingress (ETAPing)
// is answered 200 by a running responder without a tenant lookup and
// without a write.
func TestResponderAnswersPing(t *testing.T) {
	t.Parallel()
	e := newRespEnv(t)
	e.responder(t, nil)
	nc := e.nats.Connect(t)
	reply, err := ask(t, nc, subjects.ETA(subjects.PingTenant),
		map[string]any{"op": subjects.ETAPing, "tenant": subjects.PingTenant})
	if err != nil || reply.Code != http.StatusOK || reply.Error != "" {
		t.Fatalf("ping: %+v %v, want 200", reply, err)
	}
	if keys := e.slotKeys(t, subjects.PingTenant); len(keys) != 0 {
		t.Fatalf("a ping wrote %v", keys)
	}
}
