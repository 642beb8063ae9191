package ingress

import (
	"net/http"
	"testing"
)

// The access log drops to debug only for the limits' refusals: a 429,
// or a 503 that carries Retry-After (shed); a 503 without it (a store
// that failed) stays at info, as does every other answer.
func TestRefusedAnswers(t *testing.T) {
	t.Parallel()
	retry := http.Header{"Retry-After": {"1"}}
	for _, c := range []struct {
		status int
		h      http.Header
		want   bool
	}{
		{http.StatusTooManyRequests, retry, true},
		{http.StatusTooManyRequests, http.Header{}, true},
		{http.StatusServiceUnavailable, retry, true},
		{http.StatusServiceUnavailable, http.Header{}, false},
		{http.StatusCreated, retry, false},
		{http.StatusConflict, http.Header{}, false},
		{http.StatusInternalServerError, http.Header{}, false},
	} {
		if got := refused(c.status, c.h); got != c.want {
			t.Errorf("refused(%d, %v) = %v, want %v", c.status, c.h, got, c.want)
		}
	}
}
