package ingress

import (
	"context"
	"net/http"
)

type statusBody struct {
	Status string `json:"status"`
}

type notReadyBody struct {
	Status  string `json:"status"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// healthz says the process is up and serving HTTP; it checks nothing else,
// so that a storage outage does not get the process restarted.
func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

// readyz says whether the process can do its work now (NATS and the
// tenant registry usable); load balancers route only to ready processes.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := a.ready(ctx); err != nil {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, notReadyBody{Status: "unavailable", Error: codeNotReady, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
}
