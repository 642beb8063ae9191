package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"tms/subjects"
)

// errorBody is the JSON form of every error answer.
type errorBody struct {
	Status  string `json:"status"`
	Error   string `json:"error"`
	Message string `json:"message"`
	// Fits: a refused create_ticket's ticket types that would fit now
	// ([] when none would); absent from every other error.
	Fits *[]string `json:"fits,omitempty"`
}

// writeJSON sends v as the JSON body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here; failing to encode one
		// is a programming error, answered without leaking it.
		status = http.StatusInternalServerError
		body = []byte(`{"status":"error","error":"internal","message":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError sends the answer for err (see toAPIError). A 5xx is logged
// with its cause; a request the client abandoned is logged at debug only.
func writeError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	ae := toAPIError(err)
	noteErrorCode(r.Context(), ae.code)
	if ae.status >= 500 {
		level := slog.LevelError
		if errors.Is(r.Context().Err(), context.Canceled) || ae.code == codeOverloaded {
			// Shed requests are counted in tms_ingress_shed_total and in
			// the access log; an error line each would add to the load.
			level = slog.LevelDebug
		}
		logger.LogAttrs(r.Context(), level, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", ae.status), slog.String("code", ae.code), slog.Any("err", err))
	}
	for k, v := range ae.header {
		w.Header().Set(k, v)
	}
	writeJSON(w, ae.status, ae.body())
}

// body is the JSON form of the answer.
func (e *apiError) body() errorBody {
	status := e.bodyStatus
	if status == "" {
		status = "error"
	}
	return errorBody{Status: status, Error: e.code, Message: e.message, Fits: e.fits}
}

// timestamp formats t as the API shows instants (subjects.FormatStamp:
// RFC 3339 in UTC, to the microsecond Postgres stores).
func timestamp(t time.Time) string { return subjects.FormatStamp(t) }
