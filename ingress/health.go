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

// msgStarting is the answer of every route while the process sets up.
const msgStarting = "the service is starting; retry shortly"

// Starting is the handler of a listener whose process is still setting up
// (waiting for NATS or JetStream, creating its buckets and streams), until
// Server.SetHandler swaps in the real router. /healthz answers 200: the
// process is alive, and restarting it would only start the wait again.
// /readyz answers 503 saying what it waits for (waiting(); "" reads as
// starting). A request to any other path is held by the Server for up to
// startHold in case the router arrives meanwhile, then answered 503
// unavailable with Retry-After, so that a client sent here too early
// retries.
func Starting(waiting func() string) http.Handler {
	return startingHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		switch r.URL.Path {
		case "/healthz":
			w.Header().Del("Retry-After")
			writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
		case "/readyz":
			msg := "starting"
			if s := waiting(); s != "" {
				msg = "starting: " + s
			}
			writeJSON(w, http.StatusServiceUnavailable, notReadyBody{Status: "unavailable", Error: codeNotReady, Message: msg})
		default:
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Status: "error", Error: codeUnavailable, Message: msgStarting})
		}
	})
}

// startingHandler is Starting's handler; the Server holds the requests
// it would refuse (holds) until the real router is in place.
type startingHandler func(http.ResponseWriter, *http.Request)

func (h startingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h(w, r) }

// holds reports whether r waits for the router: every path but the probes.
func (startingHandler) holds(r *http.Request) bool {
	return r.URL.Path != "/healthz" && r.URL.Path != "/readyz"
}
