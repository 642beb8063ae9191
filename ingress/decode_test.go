package ingress

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// decodeTarget has a field of each shape the decoder supports.
type decodeTarget struct {
	ClientID string  `json:"client_id"`
	Name     string  `json:"name"`
	Note     *string `json:"note"`
	Count    int     `json:"count"`
	Text     *text   `json:"text"` // nullable, and refuses unpaired surrogate escapes
}

func decodeRequest(contentType, body string) (*decodeTarget, error) {
	r := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	var dst decodeTarget
	err := decodeJSON(httptest.NewRecorder(), r, &dst)
	return &dst, err
}

// TestDecodeJSONText: a nullable text member takes null (left unset),
// any JSON string encoding/json reads unchanged, surrogate pairs and
// escaped backslashes before a "u" included.
func TestDecodeJSONText(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]*string{
		`{"client_id":"c1","name":"n","count":1}`:                          nil,
		`{"client_id":"c1","name":"n","count":1,"text":null}`:              nil,
		`{"client_id":"c1","name":"n","count":1,"text":""}`:                new(""),
		`{"client_id":"c1","name":"n","count":1,"text":"\ud83d\ude00 ok"}`: new("😀 ok"),
		`{"client_id":"c1","name":"n","count":1,"text":"\\udc00"}`:         new(`\udc00`),
		`{"client_id":"c1","name":"n","count":1,"text":"a\n\t\u00e9\"\\"}`: new("a\n\té\"\\"),
	} {
		got, err := decodeRequest("application/json", body)
		if err != nil {
			t.Errorf("%s: %v", body, err)
			continue
		}
		if (got.Text == nil) != (want == nil) || (want != nil && string(*got.Text) != *want) {
			t.Errorf("%s: text %v, want %v", body, got.Text, want)
		}
	}
}

func TestDecodeJSONRefusesBadBodies(t *testing.T) {
	t.Parallel()
	const ok = `{"client_id":"c1","name":"n","count":1}`
	huge := `{"client_id":"c1","name":"` + strings.Repeat("a", maxBodyBytes) + `","count":1}`
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		mention     string // the message must name this
	}{
		{"empty body", "application/json", "", 400, codeInvalidJSON, "empty"},
		{"malformed", "application/json", `{"client_id":`, 400, codeInvalidJSON, "not valid JSON"},
		{"missing comma", "application/json", `{"client_id":"c1" "name":"n","count":1}`, 400, codeInvalidJSON, "not valid JSON"},
		{"trailing comma", "application/json", `{"client_id":"c1","name":"n","count":1,}`, 400, codeInvalidJSON, "not valid JSON"},
		{"trailing garbage", "application/json", ok + `x`, 400, codeInvalidJSON, "after the JSON object"},
		{"second object", "application/json", ok + ok, 400, codeInvalidJSON, "after the JSON object"},
		{"array", "application/json", `[` + ok + `]`, 400, codeInvalidJSON, "JSON object"},
		{"string", "application/json", `"x"`, 400, codeInvalidJSON, "JSON object"},
		{"null body", "application/json", `null`, 400, codeInvalidJSON, "JSON object"},
		{"invalid utf-8", "application/json", "{\"client_id\":\"c\xff\",\"name\":\"n\",\"count\":1}", 400, codeInvalidJSON, "UTF-8"},
		{"unknown field", "application/json", `{"client_id":"c1","name":"n","count":1,"admin":true}`, 400, codeUnknownField, `"admin"`},
		{"case variant", "application/json", `{"Client_ID":"c1","name":"n","count":1}`, 400, codeUnknownField, `"Client_ID"`},
		{"duplicate", "application/json", `{"client_id":"c1","name":"n","client_id":"c2","count":1}`, 400, codeInvalidJSON, `"client_id"`},
		{"wrong type string", "application/json", `{"client_id":1,"name":"n","count":1}`, 400, codeInvalidField, "client_id"},
		{"wrong type object", "application/json", `{"client_id":"c1","name":{"a":1},"count":1}`, 400, codeInvalidField, "name"},
		{"wrong type int", "application/json", `{"client_id":"c1","name":"n","count":"1"}`, 400, codeInvalidField, "count"},
		{"fraction for int", "application/json", `{"client_id":"c1","name":"n","count":1.5}`, 400, codeInvalidField, "count"},
		{"null required", "application/json", `{"client_id":null,"name":"n","count":1}`, 400, codeInvalidField, "client_id"},
		{"null optional", "application/json", `{"client_id":"c1","name":"n","count":1,"note":null}`, 400, codeInvalidField, "note"},
		{"missing required", "application/json", `{"client_id":"c1","count":1}`, 400, codeInvalidField, "name"},
		{"text number", "application/json", `{"client_id":"c1","name":"n","count":1,"text":1}`, 400, codeInvalidField, "text"},
		{"text object", "application/json", `{"client_id":"c1","name":"n","count":1,"text":{}}`, 400, codeInvalidField, "text"},
		{"text lone low surrogate", "application/json", `{"client_id":"c1","name":"n","count":1,"text":"a\udc00b"}`, 400, codeInvalidField, "surrogate"},
		{"text lone high surrogate", "application/json", `{"client_id":"c1","name":"n","count":1,"text":"a\ud83d"}`, 400, codeInvalidField, "surrogate"},
		{"text high surrogate then text", "application/json", `{"client_id":"c1","name":"n","count":1,"text":"\ud83dx"}`, 400, codeInvalidField, "surrogate"},
		{"text two high surrogates", "application/json", `{"client_id":"c1","name":"n","count":1,"text":"\ud83d\ud83d"}`, 400, codeInvalidField, "text"},
		{"too large", "application/json", huge, 413, codeBodyTooLarge, "65536"},
		{"text/plain", "text/plain", ok, 415, codeUnsupportedMediaType, "application/json"},
		{"form", "application/x-www-form-urlencoded", "client_id=c1", 415, codeUnsupportedMediaType, "application/json"},
		{"no content type", "", ok, 415, codeUnsupportedMediaType, "application/json"},
		{"latin1 charset", "application/json; charset=latin1", ok, 415, codeUnsupportedMediaType, "application/json"},
		{"unparseable content type", "application/json;;", ok, 415, codeUnsupportedMediaType, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := decodeRequest(tt.contentType, tt.body)
			ae, ok := errors.AsType[*apiError](err)
			if !ok {
				t.Fatalf("error = %v, want an *apiError", err)
			}
			if ae.status != tt.status || ae.code != tt.code {
				t.Errorf("got %d %s (%s), want %d %s", ae.status, ae.code, ae.message, tt.status, tt.code)
			}
			if !strings.Contains(ae.message, tt.mention) {
				t.Errorf("message %q does not mention %q", ae.message, tt.mention)
			}
		})
	}
}

func TestDecodeJSONAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, contentType, body string
		want                    decodeTarget
	}{
		{"plain", "application/json", `{"client_id":"c1","name":"n","count":3}`,
			decodeTarget{ClientID: "c1", Name: "n", Count: 3}},
		{"charset and spaces", "Application/JSON; charset=UTF-8", " \n{ \"name\" : \"n\", \"count\":0,\"client_id\":\"c1\" }\n",
			decodeTarget{ClientID: "c1", Name: "n"}},
		{"escaped key and unicode", "application/json", `{"client\u005fid":"c1","name":"h\u00e9","count":-1}`,
			decodeTarget{ClientID: "c1", Name: "hé", Count: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeRequest(tt.contentType, tt.body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if *got != tt.want {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}

	t.Run("optional given", func(t *testing.T) {
		t.Parallel()
		got, err := decodeRequest("application/json", `{"client_id":"c1","name":"n","count":1,"note":"x"}`)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.Note == nil || *got.Note != "x" {
			t.Errorf("note = %v, want x", got.Note)
		}
	})
	t.Run("exactly 64 KiB", func(t *testing.T) {
		t.Parallel()
		prefix, suffix := `{"client_id":"c1","count":1,"name":"`, `"}`
		body := prefix + strings.Repeat("a", maxBodyBytes-len(prefix)-len(suffix)) + suffix
		if _, err := decodeRequest("application/json", body); err != nil {
			t.Fatalf("decode of a %d-byte body: %v", len(body), err)
		}
	})
}

func TestQuoteCutsLongStrings(t *testing.T) {
	t.Parallel()
	q := quote(strings.Repeat("é", 100))
	if len(q) > 80 || !strings.HasSuffix(q, "...") {
		t.Errorf("quote = %s", q)
	}
	var s string
	if err := json.Unmarshal([]byte(strings.TrimSuffix(q, "...")), &s); err != nil {
		t.Errorf("cut inside a rune: %v", err)
	}
}
