package ingress

import (
	"log/slog"
	"net/http"
	"runtime/debug"
)

// recoverer turns a panicking handler into a logged 500 with the JSON
// error body, so one bad request cannot take the listener down.
func recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					// The handler asked net/http to abort the response.
					panic(v)
				}
				logger.LogAttrs(r.Context(), slog.LevelError, "handler panicked",
					slog.String("method", r.Method), slog.String("path", r.URL.Path),
					slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				writeJSON(w, http.StatusInternalServerError,
					errorBody{Status: "error", Error: codeInternal, Message: msgInternal})
			}()
			next.ServeHTTP(w, r)
		})
	}
}
