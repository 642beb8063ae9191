package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// maxBodyBytes is the largest request body accepted (docs/api.md: 64 KiB).
const maxBodyBytes = 64 << 10

// decodeJSON reads r's body, which must be exactly one JSON object, into
// dst, a pointer to a struct whose fields carry `json:"name"` tags. A field
// of pointer type is optional; every other field is required.
//
// encoding/json alone is too lenient for an API contract: it matches keys
// case-insensitively, keeps the last of duplicate keys, ignores unknown
// keys unless told, accepts trailing data in a stream and replaces invalid
// UTF-8. So the object is tokenised here, and each value is unmarshalled on
// its own into the field whose tag matches its key exactly. The error is an
// *apiError naming the offending field:
//
//   - 415 unsupported_media_type: a body whose Content-Type is not
//     application/json (charset, if given, must be utf-8)
//   - 413 body_too_large: more than 64 KiB
//   - 400 invalid_json: not UTF-8, not JSON, not an object, trailing data,
//     a key given twice
//   - 400 unknown_field: a key that is not a field (case matters)
//   - 400 invalid_field: a value of the wrong type, null (unless the
//     field's type is nullable), or a required field missing
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError(http.StatusRequestEntityTooLarge, codeBodyTooLarge,
				"request body is larger than %d bytes", maxBodyBytes)
		}
		return newError(http.StatusBadRequest, codeInvalidJSON, "reading the request body: %v", err)
	}
	return decodeObject(data, dst)
}

// checkContentType refuses a body that does not say it is JSON. A request
// with no body and no Content-Type passes, to be refused as empty JSON.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength == 0 {
		return nil
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if err == nil && mediaType == "application/json" {
		ok := true
		for k, v := range params {
			if k != "charset" || !strings.EqualFold(v, "utf-8") {
				ok = false
			}
		}
		if ok {
			return nil
		}
	}
	return newError(http.StatusUnsupportedMediaType, codeUnsupportedMediaType,
		"Content-Type must be application/json (got %s)", quote(ct))
}

// member is one key and its raw value, in document order.
type member struct {
	key string
	raw json.RawMessage
}

// decodeObject decodes data, the whole body, into dst (see decodeJSON).
func decodeObject(data []byte, dst any) error {
	if !utf8.Valid(data) {
		return newError(http.StatusBadRequest, codeInvalidJSON, "request body is not valid UTF-8")
	}
	members, err := tokenizeObject(data)
	if err != nil {
		return err
	}
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("ingress: decodeObject into %T, want a pointer to a struct", dst))
	}
	sv := v.Elem()
	fields := fieldsOf(sv.Type())

	seen := make(map[string]bool, len(members))
	for _, m := range members {
		f, ok := fields.byName[m.key]
		if !ok {
			return unknownField(m.key, fields)
		}
		if seen[m.key] {
			return newError(http.StatusBadRequest, codeInvalidJSON, "field %s is given more than once", quote(m.key))
		}
		seen[m.key] = true
		if err := setField(sv.Field(f.index), f, m.raw); err != nil {
			return err
		}
	}
	for _, f := range fields.list {
		if f.required && !seen[f.name] {
			return errInvalidField(f.name, "is required")
		}
	}
	return nil
}

// tokenizeObject checks that data is exactly one JSON object and returns
// its members in order, values still raw.
func tokenizeObject(data []byte) ([]member, error) {
	malformed := func(err error) error {
		return newError(http.StatusBadRequest, codeInvalidJSON, "request body is not valid JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, newError(http.StatusBadRequest, codeInvalidJSON, "request body is empty; a JSON object is required")
	}
	if err != nil {
		return nil, malformed(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, newError(http.StatusBadRequest, codeInvalidJSON, "request body must be a JSON object")
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, malformed(fmt.Errorf("object key is %v, not a string", tok))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, malformed(err)
		}
		members = append(members, member{key: key, raw: raw})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, malformed(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, newError(http.StatusBadRequest, codeInvalidJSON, "unexpected data after the JSON object")
	}
	return members, nil
}

// nullable is a field type for which JSON null is a value: the field
// is left unset, as if absent (a ticket's optional text).
type nullable interface{ acceptsNull() }

// valueError is a field type's own refusal of a value (its
// UnmarshalJSON's), said instead of "must be <type>".
type valueError struct{ message string }

func (e *valueError) Error() string { return e.message }

func setField(fv reflect.Value, f field, raw json.RawMessage) error {
	if bytes.Equal(raw, []byte("null")) {
		if t := fv.Type(); t.Kind() == reflect.Pointer && t.Elem().Implements(reflect.TypeFor[nullable]()) {
			return nil
		}
		return errInvalidField(f.name, "must be %s, not null", f.want)
	}
	target := fv
	if fv.Kind() == reflect.Pointer {
		target = reflect.New(fv.Type().Elem())
		fv.Set(target)
	} else {
		target = fv.Addr()
	}
	if err := json.Unmarshal(raw, target.Interface()); err != nil {
		if ve, ok := errors.AsType[*valueError](err); ok {
			return errInvalidField(f.name, "%s", ve.message)
		}
		return errInvalidField(f.name, "must be %s", f.want)
	}
	return nil
}

func unknownField(key string, fields *structFields) error {
	for _, f := range fields.list {
		if strings.EqualFold(f.name, key) {
			return newError(http.StatusBadRequest, codeUnknownField,
				"unknown field %s (field names are case-sensitive: did you mean %q?)", quote(key), f.name)
		}
	}
	names := make([]string, len(fields.list))
	for i, f := range fields.list {
		names[i] = f.name
	}
	return newError(http.StatusBadRequest, codeUnknownField,
		"unknown field %s (known fields: %s)", quote(key), strings.Join(names, ", "))
}

// quote shows a client-supplied string in a message, cut short so that a
// huge key is not echoed back whole.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// field describes one decodable struct field.
type field struct {
	name     string // JSON key, exact case
	index    int
	required bool
	want     string // "a string", for messages
}

type structFields struct {
	list   []field
	byName map[string]field
}

var fieldCache sync.Map // reflect.Type -> *structFields

func fieldsOf(t reflect.Type) *structFields {
	if sf, ok := fieldCache.Load(t); ok {
		return sf.(*structFields)
	}
	sf := &structFields{byName: map[string]field{}}
	for i := 0; i < t.NumField(); i++ {
		ft := t.Field(i)
		name, _, _ := strings.Cut(ft.Tag.Get("json"), ",")
		if name == "" || name == "-" || !ft.IsExported() {
			continue
		}
		typ := ft.Type
		required := typ.Kind() != reflect.Pointer
		if !required {
			typ = typ.Elem()
		}
		f := field{name: name, index: i, required: required, want: describe(typ)}
		sf.list = append(sf.list, f)
		sf.byName[name] = f
	}
	actual, _ := fieldCache.LoadOrStore(t, sf)
	return actual.(*structFields)
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}
