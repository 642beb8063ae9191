// Package openapi holds the OpenAPI 3.1 documents of tms's HTTP
// listeners, hand-written in YAML and embedded: public.yaml (the public
// listener), internal.yaml (the internal one), ops.yaml (a worker's ops
// listener), and common.yaml, the components they share. Document merges
// a listener's file with the shared components it uses and gives it as
// JSON; Handler serves that at GET /openapi.json.
//
// ingress/openapi_test.go keeps the documents true: every route of each
// router is documented and every documented route exists, every example
// request is accepted by the real handler, and examples and real answers
// match the documented schemas.
package openapi

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed common.yaml public.yaml internal.yaml ops.yaml
var files embed.FS

// Listeners are the names Document knows, those of ingress's routers.
var Listeners = []string{"public", "internal", "ops"}

// Document is the OpenAPI document of listener ("public", "internal" or
// "ops") as indented JSON: the listener's file, with common.yaml's
// components that it references (directly or through another) added,
// and every path item that is a reference to components/pathItems
// replaced by the item itself, which every tool reads.
func Document(listener string) ([]byte, error) {
	if !slices.Contains(Listeners, listener) {
		return nil, fmt.Errorf("openapi: no document for listener %q", listener)
	}
	doc, err := load(listener + ".yaml")
	if err != nil {
		return nil, err
	}
	common, err := load("common.yaml")
	if err != nil {
		return nil, err
	}
	if err := merge(doc, common); err != nil {
		return nil, fmt.Errorf("openapi: %s: %w", listener, err)
	}
	return encode(doc)
}

// topOrder is the order of the document's top-level members in the JSON
// (inside them, keys are sorted).
var topOrder = []string{"openapi", "info", "servers", "security", "paths", "components"}

// encode writes doc as indented JSON, its top-level members in topOrder.
func encode(doc map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{")
	keys := slices.Clone(topOrder)
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	first := true
	for _, k := range keys {
		v, ok := doc[k]
		if !ok {
			continue
		}
		var member bytes.Buffer
		enc := json.NewEncoder(&member)
		enc.SetEscapeHTML(false)
		enc.SetIndent("  ", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, fmt.Errorf("openapi: %s: %w", k, err)
		}
		if !first {
			buf.WriteString(",")
		}
		first = false
		name, _ := json.Marshal(k)
		fmt.Fprintf(&buf, "\n  %s: %s", name, bytes.TrimRight(member.Bytes(), "\n"))
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

// load reads an embedded YAML file into JSON values (maps with string
// keys only: a key YAML reads as a number, such as an unquoted status
// code, is an error).
func load(name string) (map[string]any, error) {
	data, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("openapi: %s: %w", name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("openapi: %s: not a mapping with string keys (quote status codes: '200')", name)
	}
	if err := checkKeys(name, m); err != nil {
		return nil, err
	}
	return m, nil
}

func checkKeys(where string, v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if err := checkKeys(where+"."+k, x); err != nil {
				return err
			}
		}
	case []any:
		for i, x := range v {
			if err := checkKeys(fmt.Sprintf("%s[%d]", where, i), x); err != nil {
				return err
			}
		}
	case map[any]any:
		return fmt.Errorf("openapi: %s: a mapping with a non-string key (quote status codes: '200')", where)
	}
	return nil
}

const pathItemRef = "#/components/pathItems/"

// merge adds to doc the components of common that doc references and
// does not define itself, inlines the path items referenced from paths,
// and drops every top-level x- member (YAML anchors' holders).
func merge(doc, common map[string]any) error {
	for k := range doc {
		if strings.HasPrefix(k, "x-") {
			delete(doc, k)
		}
	}
	own, _ := doc["components"].(map[string]any)
	if own == nil {
		own = map[string]any{}
	}
	shared, _ := common["components"].(map[string]any)
	lookup := func(section, name string) (any, bool) {
		if s, ok := own[section].(map[string]any); ok {
			if v, ok := s[name]; ok {
				return v, true
			}
		}
		if s, ok := shared[section].(map[string]any); ok {
			if v, ok := s[name]; ok {
				return v, true
			}
		}
		return nil, false
	}
	paths, _ := doc["paths"].(map[string]any)
	for p, item := range paths {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		ref, ok := m["$ref"].(string)
		if !ok || !strings.HasPrefix(ref, pathItemRef) {
			continue
		}
		v, ok := lookup("pathItems", strings.TrimPrefix(ref, pathItemRef))
		if !ok {
			return fmt.Errorf("path %s: no %s", p, ref)
		}
		paths[p] = deepCopy(v)
	}
	// Copy in the shared components reached from doc, until none is new.
	for {
		added := false
		for _, ref := range append(refs(doc), always...) {
			section, name, ok := splitRef(ref)
			if !ok {
				return fmt.Errorf("unsupported $ref %q", ref)
			}
			s, _ := own[section].(map[string]any)
			if s == nil {
				s = map[string]any{}
				own[section] = s
			}
			if _, ok := s[name]; ok {
				continue
			}
			v, ok := lookup(section, name)
			if !ok {
				return fmt.Errorf("unresolved $ref %q", ref)
			}
			s[name] = deepCopy(v)
			doc["components"] = own
			added = true
		}
		if !added {
			break
		}
	}
	delete(own, "pathItems")
	return nil
}

// always are the shared components every document keeps though no
// operation references them: the answers of the router itself to a path
// it does not have and to a method a path does not have.
var always = []string{"#/components/responses/NotFound", "#/components/responses/MethodNotAllowed"}

// refs lists every $ref value in v, sorted, once each.
func refs(v any) []string {
	set := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					set[s] = true
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	return slices.Sorted(maps.Keys(set))
}

// splitRef splits "#/components/<section>/<name>".
func splitRef(ref string) (section, name string, ok bool) {
	rest, ok := strings.CutPrefix(ref, "#/components/")
	if !ok {
		return "", "", false
	}
	section, name, ok = strings.Cut(rest, "/")
	return section, name, ok && name != "" && !strings.Contains(name, "/")
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

// Handler serves listener's document at GET /openapi.json: JSON, built
// once, with a strong ETag (If-None-Match answers 304) and a cache
// lifetime of five minutes. It takes no authentication and no rate limit,
// like /healthz.
func Handler(listener string) (http.Handler, error) {
	body, err := Document(listener)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("ETag", etag)
		h.Set("Cache-Control", "public, max-age=300")
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(body)
	}), nil
}

// etagMatches reports whether an If-None-Match list names etag (or is *).
func etagMatches(header, etag string) bool {
	for _, m := range strings.Split(header, ",") {
		m = strings.TrimPrefix(strings.TrimSpace(m), "W/")
		if m == etag || m == "*" {
			return true
		}
	}
	return false
}
