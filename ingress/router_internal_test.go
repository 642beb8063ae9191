package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/admission"
	"tms/ops/testkit"
)

func newInternalForTest(t *testing.T, ready func(context.Context) error) http.Handler {
	t.Helper()
	e := newEnv(t)
	cfg := e.config(ready)
	cfg.Metrics = prometheus.NewRegistry()
	e.withAdmission(&cfg, admission.Config{})
	h, err := NewInternal(cfg)
	if err != nil {
		t.Fatalf("NewInternal: %v", err)
	}
	return h
}

func serve(h http.Handler, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func decodeBody(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return body
}

func TestInternalRouter(t *testing.T) {
	t.Parallel()
	h := newInternalForTest(t, func(context.Context) error { return nil })
	tests := []struct {
		method, path string
		status       int
		code         string // "" for a success answer
		allow        string
	}{
		{http.MethodGet, "/healthz", 200, "", ""},
		{http.MethodGet, "/readyz", 200, "", ""},
		{http.MethodGet, "/nope", 404, codeNotFound, ""},
		{http.MethodGet, "/validate_eta", 405, codeMethodNotAllowed, "POST"},
		{http.MethodPost, "/allocate_slot", 400, codeInvalidJSON, ""},
		{http.MethodPost, "/create_ticket", 404, codeNotFound, ""},
		{http.MethodGet, "/metrics", 404, codeNotFound, ""},
		{http.MethodPost, "/healthz", 405, codeMethodNotAllowed, "GET"},
		{http.MethodDelete, "/readyz", 405, codeMethodNotAllowed, "GET"},
		{"BREW", "/healthz", 405, codeMethodNotAllowed, "GET"},
		{"BREW", "/nope", 404, codeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := serve(h, tt.method, tt.path)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			body := decodeBody(t, rec)
			if tt.code != "" && (body["status"] != "error" || body["error"] != tt.code || body["message"] == "") {
				t.Errorf("body %v, want error %s", body, tt.code)
			}
			if got := strings.Join(rec.Header().Values("Allow"), ","); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestReadyzReportsNotReady(t *testing.T) {
	t.Parallel()
	h := newInternalForTest(t, func(context.Context) error { return errors.New("nats: no servers available") })
	rec := serve(h, http.MethodGet, "/readyz")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	body := decodeBody(t, rec)
	if body["status"] != "unavailable" || body["error"] != codeNotReady || !strings.Contains(body["message"].(string), "nats") {
		t.Errorf("body %v", body)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	// Liveness does not depend on readiness.
	if rec := serve(h, http.MethodGet, "/healthz"); rec.Code != http.StatusOK {
		t.Errorf("/healthz %d while not ready", rec.Code)
	}
}

func TestServerRunStopsCleanly(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
	})
	srv := NewServer("test", ln, h, testkit.Logger(t))
	if srv.srv.ReadHeaderTimeout != 5*time.Second || srv.srv.ReadTimeout != 10*time.Second ||
		srv.srv.WriteTimeout != 15*time.Second || srv.srv.IdleTimeout != 60*time.Second ||
		srv.srv.MaxHeaderBytes != 16<<10 {
		t.Errorf("timeouts %+v", srv.srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String()
	resp, err := client.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	resp.Body.Close()

	// A request in flight when the stop comes still gets its answer.
	slow := make(chan error, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		slow <- err
	}()
	<-started
	cancel()
	testkit.Eventually(t, 5*time.Second, func() bool {
		// Shutdown closes the listener first: new connections are refused.
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the listener to close")
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
