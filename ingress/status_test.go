package ingress

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestStatusPageFiles: GET /status and its two files answer with their
// types and the strict headers, without a token; anything else under
// /status is a JSON 404, a query a 400.
func TestStatusPageFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct{ path, contentType, contains string }{
		{"/status", "text/html; charset=utf-8", `<script src="/status/app.js" defer></script>`},
		{"/status/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/status/app.css", "text/css; charset=utf-8", ".type-GOLD"},
	} {
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		h := rec.Header()
		if rec.Code != http.StatusOK || h.Get("Content-Type") != tc.contentType || !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: %d %q, want 200 %s with %q", tc.path, rec.Code, h.Get("Content-Type"), tc.contentType, tc.contains)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": statusCSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("GET %s: %s %q, want %q", tc.path, k, got, want)
			}
		}
	}
	if !strings.Contains(statusCSP, "default-src 'self'") || strings.Contains(statusCSP, "unsafe") {
		t.Errorf("CSP %q", statusCSP)
	}
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/status/status.html", http.StatusNotFound, codeNotFound},
		{"/status/web", http.StatusNotFound, codeNotFound},
		{"/status/", http.StatusNotFound, codeNotFound},
		{"/status/..%2fstatus.go", http.StatusNotFound, codeNotFound},
		{"/status/app.js/x", http.StatusNotFound, codeNotFound},
		{"/status?token=secret", http.StatusBadRequest, codeUnknownField},
		{"/status/app.js?v=2", http.StatusBadRequest, codeUnknownField},
	} {
		resp := e.do(t, request{method: "GET", path: tc.path})
		if resp.status != tc.status || resp.body["error"] != tc.code {
			t.Errorf("GET %s: %d %s, want %d %s", tc.path, resp.status, resp.raw, tc.status, tc.code)
		}
	}
	if resp := e.do(t, request{method: "POST", path: "/status", body: "{}"}); resp.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: %d %s", resp.status, resp.raw)
	}
}

// TestStatusPageIsSelfContained: no embedded file names a URL of another
// origin (no CDN: the page works offline), the page has no inline script,
// style or event handler (the CSP would refuse them), and every file it
// loads is one tms serves.
func TestStatusPageIsSelfContained(t *testing.T) {
	t.Parallel()
	err := fs.WalkDir(statusFiles, "web", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := statusFiles.ReadFile(path)
		if err != nil {
			return err
		}
		text := strings.ToLower(string(data))
		for _, bad := range []string{"http://", "https://", "//cdn", "url(", "@import", "innerhtml", "eval(", "localstorage"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	page, err := statusFiles.ReadFile("web/status.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, m := range regexp.MustCompile(`<script([^>]*)>([^<]*)</script>`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(m[1], `src="/status/`) || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline or foreign script %q", m[0])
		}
	}
	if regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`).MatchString(html) {
		t.Errorf("the page has inline style or an inline event handler")
	}
	served := 0
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1) {
		name, ok := strings.CutPrefix(m[1], "/status/")
		if _, known := statusAssets[name]; !ok || !known || name == "" {
			t.Errorf("the page loads %q, which is not one of its files", m[1])
		}
		served++
	}
	if served != 2 {
		t.Errorf("the page loads %d files, want app.js and app.css", served)
	}
	// The token input is a password field; the token is never put in a URL.
	if !regexp.MustCompile(`<input id="token"[^>]*type="password"`).MatchString(html) {
		t.Errorf("the token input is not a password field")
	}
	js, _ := statusFiles.ReadFile("web/app.js")
	if strings.Contains(string(js), "token=") || strings.Contains(string(js), "location") {
		t.Errorf("app.js may put the token in a URL")
	}
}
