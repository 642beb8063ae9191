package ingress

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// TestServerStartsBeforeItsRouter: a listener answers while its process
// still sets up (Starting): /healthz 200, /readyz 503 saying what it waits
// for, anything else 503 with Retry-After; SetHandler swaps in the router
// for the requests that follow, on the same connection too.
func TestServerStartsBeforeItsRouter(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	waiting := "waiting for JetStream: no answer"
	srv := NewServer("public", ln, Starting(func() string { return waiting }), testkit.Logger(t))
	srv.hold = 50 * time.Millisecond // not what this test is about
	srv.Start()
	base := "http://" + srv.Addr().String()
	hc := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	get := func(path string) (int, http.Header, map[string]any) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, resp.Header, body
	}
	if code, _, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while starting: %d", code)
	}
	code, h, body := get("/readyz")
	if msg, _ := body["message"].(string); code != http.StatusServiceUnavailable || body["error"] != codeNotReady ||
		!strings.Contains(msg, waiting) || h.Get("Retry-After") == "" {
		t.Errorf("/readyz while starting: %d %v", code, body)
	}
	if code, h, body := get("/create_ticket"); code != http.StatusServiceUnavailable || body["error"] != codeUnavailable ||
		h.Get("Retry-After") == "" {
		t.Errorf("/create_ticket while starting: %d %v", code, body)
	}

	srv.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, statusBody{Status: "router"})
	}))
	if code, _, body := get("/create_ticket"); code != http.StatusOK || body["status"] != "router" {
		t.Errorf("after SetHandler: %d %v", code, body)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestServerHoldsEarlyRequestsForTheRouter: a request that arrives while
// the process still sets up waits for the router (up to startHold) and is
// answered by it, rather than refused; the probes are not held.
func TestServerHoldsEarlyRequestsForTheRouter(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer("public", ln, Starting(func() string { return "" }), testkit.Logger(t))
	srv.hold = time.Minute // only the router ends this wait
	srv.Start()
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	base := "http://" + srv.Addr().String()
	hc := &http.Client{Timeout: 2 * time.Minute}
	t.Cleanup(hc.CloseIdleConnections)

	resp, err := hc.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || srv.held.Load() != 0 {
		t.Fatalf("/readyz while starting: %d (held %d); want 503 at once", resp.StatusCode, srv.held.Load())
	}

	done := make(chan int, 1)
	go func() {
		resp, err := hc.Post(base+"/create_account", "application/json", strings.NewReader(`{}`))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testkit.Eventually(t, 30*time.Second, func() bool { return srv.held.Load() == 1 }, "the early request held")
	srv.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	if code := <-done; code != http.StatusCreated {
		t.Fatalf("early POST /create_account: %d, want the router's 201", code)
	}
}
