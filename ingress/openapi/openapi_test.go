package openapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestDocumentUnknownListener(t *testing.T) {
	if _, err := Document("nosuch"); err == nil {
		t.Fatal("Document(nosuch): no error")
	}
	if _, err := Handler("nosuch"); err == nil {
		t.Fatal("Handler(nosuch): no error")
	}
}

// TestDocumentsAreSelfContained: each document is JSON whose top level
// starts with "openapi", keeps no x- holder of YAML anchors, inlines the
// shared path items and holds every component it references.
func TestDocumentsAreSelfContained(t *testing.T) {
	for _, l := range Listeners {
		data, err := Document(l)
		if err != nil {
			t.Fatalf("Document(%s): %v", l, err)
		}
		if !strings.HasPrefix(string(data), "{\n  \"openapi\": \"3.1.0\",") {
			t.Errorf("%s: starts %.40q", l, data)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		for k := range doc {
			if strings.HasPrefix(k, "x-") {
				t.Errorf("%s: top-level %s kept", l, k)
			}
		}
		comps, _ := doc["components"].(map[string]any)
		if _, ok := comps["pathItems"]; ok {
			t.Errorf("%s: components.pathItems kept", l)
		}
		for _, ref := range refs(doc) {
			section, name, ok := splitRef(ref)
			s, _ := comps[section].(map[string]any)
			if _, found := s[name]; !ok || !found {
				t.Errorf("%s: %s does not resolve", l, ref)
			}
		}
	}
}

func TestMergeRefusesUnresolvedRef(t *testing.T) {
	doc := map[string]any{"paths": map[string]any{"/x": map[string]any{"get": map[string]any{
		"responses": map[string]any{"200": map[string]any{"$ref": "#/components/responses/Nope"}}}}}}
	common := map[string]any{"components": map[string]any{"responses": map[string]any{
		"NotFound": map[string]any{}, "MethodNotAllowed": map[string]any{}}}}
	if err := merge(doc, common); err == nil || !strings.Contains(err.Error(), "Nope") {
		t.Fatalf("merge: %v, want an unresolved $ref", err)
	}
}

func TestCheckKeysRefusesNumericKeys(t *testing.T) {
	var v any
	if err := yaml.Unmarshal([]byte("paths:\n  /x:\n    get:\n      responses:\n        200: {description: ok}\n"), &v); err != nil {
		t.Fatal(err)
	}
	if err := checkKeys("test", v); err == nil {
		t.Fatal("an unquoted status code passed")
	}
}

func TestHandlerETag(t *testing.T) {
	h, err := Handler("ops")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	etag := rec.Header().Get("ETag")
	if rec.Code != http.StatusOK || etag == "" || rec.Header().Get("Cache-Control") == "" {
		t.Fatalf("%d ETag %q", rec.Code, etag)
	}
	for header, want := range map[string]int{etag: 304, `W/` + etag: 304, `"other", ` + etag: 304, "*": 304, `"other"`: 200} {
		req := httptest.NewRequest("GET", "/openapi.json", nil)
		req.Header.Set("If-None-Match", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("If-None-Match %s: %d, want %d", header, rec.Code, want)
		}
	}
}
