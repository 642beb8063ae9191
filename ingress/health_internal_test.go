package ingress

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"tms/ops"
)

// TestReadyzDegraded: with Postgres unreachable (a check that only
// degrades) /readyz stays 200 with status degraded and names what is
// wrong, so a load balancer keeps the process, which still admits tickets;
// a required check failing too makes it 503.
func TestReadyzDegraded(t *testing.T) {
	t.Parallel()
	var pg, nats error
	ready := ops.Readiness(
		ops.Check{Name: "nats", Check: func(context.Context) error { return nats }},
		ops.Check{Name: "postgres", Degrades: true, Check: func(context.Context) error { return pg }},
	)
	h := newInternalForTest(t, ready)

	rec := serve(h, http.MethodGet, "/readyz")
	if body := decodeBody(t, rec); rec.Code != http.StatusOK || body["status"] != "ready" {
		t.Fatalf("all well: %d %v", rec.Code, body)
	}

	pg = errors.New("postgres server 0 (postgres://postgres@127.0.0.1:5432/postgres): connection refused")
	rec = serve(h, http.MethodGet, "/readyz")
	body := decodeBody(t, rec)
	if rec.Code != http.StatusOK || body["status"] != "degraded" || body["message"] != "postgres: "+pg.Error() {
		t.Fatalf("postgres down: %d %v", rec.Code, body)
	}
	if _, ok := body["error"]; ok {
		t.Errorf("degraded answer carries an error code: %v", body)
	}
	if rec.Header().Get("Retry-After") != "" {
		t.Error("degraded answer has Retry-After")
	}

	nats = errors.New("connection RECONNECTING")
	rec = serve(h, http.MethodGet, "/readyz")
	body = decodeBody(t, rec)
	if rec.Code != http.StatusServiceUnavailable || body["status"] != "unavailable" || body["error"] != codeNotReady {
		t.Fatalf("nats and postgres down: %d %v", rec.Code, body)
	}

	nats, pg = nil, nil
	if rec := serve(h, http.MethodGet, "/readyz"); rec.Code != http.StatusOK || decodeBody(t, rec)["status"] != "ready" {
		t.Fatalf("recovered: %d %s", rec.Code, rec.Body)
	}
}
