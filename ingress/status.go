package ingress

import (
	"embed"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// GET /status (docs/api.md, "Status page"): a small HTML page, served by
// tms itself from the files embedded here, that asks for a tenant's bearer
// token and draws the tenant's next hours from GET /calendar, GET /capacity
// and GET /admissions/recent. The page and its files hold no tenant data:
// they are served without authentication; the JSON they call is
// authenticated. Nothing is loaded from anywhere else (no CDN: it works
// offline), and the Content-Security-Policy says so to the browser.

//go:embed web
var statusFiles embed.FS

// statusAsset is one file the page is made of.
type statusAsset struct {
	name, contentType string
}

// statusAssets are the files under /status/, by their last path segment;
// "" is the page itself.
var statusAssets = map[string]statusAsset{
	"":        {"web/status.html", "text/html; charset=utf-8"},
	"app.js":  {"web/app.js", "text/javascript; charset=utf-8"},
	"app.css": {"web/app.css", "text/css; charset=utf-8"},
}

// statusCSP allows the page its own files and its own origin's JSON,
// nothing inline and nothing from elsewhere.
const statusCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// statusPageHTTP is GET /status.
func (a *api) statusPageHTTP(w http.ResponseWriter, r *http.Request) {
	a.serveStatusAsset(w, r, "")
}

// statusAssetHTTP is GET /status/{file}.
func (a *api) statusAssetHTTP(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "file")
	if name == "" {
		writeError(w, r, a.logger, newError(http.StatusNotFound, codeNotFound, "no route for %s", quote(r.URL.Path)))
		return
	}
	a.serveStatusAsset(w, r, name)
}

func (a *api) serveStatusAsset(w http.ResponseWriter, r *http.Request, name string) {
	if err := noQuery(r.URL); err != nil {
		writeError(w, r, a.logger, err)
		return
	}
	asset, ok := statusAssets[name]
	if !ok {
		writeError(w, r, a.logger, newError(http.StatusNotFound, codeNotFound, "no route for %s", quote(r.URL.Path)))
		return
	}
	data, err := statusFiles.ReadFile(asset.name)
	if err != nil {
		writeError(w, r, a.logger, err) // a file missing from the build: 500
		return
	}
	h := w.Header()
	h.Set("Content-Type", asset.contentType)
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// Small files, and a new tms may bring new ones: always revalidated.
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}
