package ingress

import (
	"context"
	"errors"
	"net/http"
)

type statusBody struct {
	Status string `json:"status"`
}

type degradedBody struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type notReadyBody struct {
	Status  string `json:"status"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// degraded is how a readiness error says the process still does its main
// work (ops.DegradedError): matched by behaviour, since ingress does not
// import ops.
type degraded interface{ Degraded() bool }

// healthz says the process is up and serving HTTP; it checks nothing else,
// so that a storage outage does not get the process restarted.
func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

// readyz says whether the process can do its work now (NATS and the
// tenant registry usable); load balancers route only to ready processes.
// A degraded process (Postgres unreachable) is still ready: tickets are
// admitted in NATS and land when Postgres is back, so it answers 200 with
// status "degraded" and what is wrong, and stays in rotation.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	err := a.ready(ctx)
	var d degraded
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
	case errors.As(err, &d) && d.Degraded():
		writeJSON(w, http.StatusOK, degradedBody{Status: "degraded", Message: err.Error()})
	default:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, notReadyBody{Status: "unavailable", Error: codeNotReady, Message: err.Error()})
	}
}
