package ingress

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode checks that no body, whatever its bytes or Content-Type,
// panics the decoder or gets anything but success or a 4xx; and that what
// it accepts is exactly what encoding/json reads from the same object (the
// strict checks only ever refuse, never change a value).
func FuzzDecode(f *testing.F) {
	f.Add("application/json", []byte(`{"client_id":"c1","name":"n","count":1}`))
	f.Add("application/json; charset=utf-8", []byte(`{"client_id":"c1","name":"n","count":1,"note":"x"}`))
	f.Add("text/plain", []byte(`{}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", contentType)
		var got decodeTarget
		err := decodeJSON(httptest.NewRecorder(), r, &got)
		if err != nil {
			ae, ok := errors.AsType[*apiError](err)
			if !ok {
				t.Fatalf("error %v is not an *apiError", err)
			}
			if ae.status < 400 || ae.status > 499 || ae.code == "" || ae.message == "" {
				t.Fatalf("answer %d %q %q, want a 4xx with code and message", ae.status, ae.code, ae.message)
			}
			return
		}
		var want decodeTarget
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("decodeJSON accepted %q, encoding/json refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeJSON read %+v, encoding/json %+v", got, want)
		}
	})
}
