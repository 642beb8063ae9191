package ingress

import (
	"net/http"
	"strings"
	"testing"

	"tms/ops/testkit"
)

func TestRecovererAnswersJSON500(t *testing.T) {
	t.Parallel()
	h := recoverer(testkit.Logger(t))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))
	rec := serve(h, http.MethodGet, "/")
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	if body := decodeBody(t, rec); body["error"] != codeInternal || strings.Contains(rec.Body.String(), "boom") {
		t.Errorf("body %s", rec.Body)
	}
}
