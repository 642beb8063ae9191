package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ingress/openapi"
)

// apiDoc is one listener's OpenAPI document, as served, read three ways:
// raw JSON (to walk examples), and kin-openapi's model (which validates
// OpenAPI 3.1 with JSON Schema 2020-12) with a router over it.
type apiDoc struct {
	listener string
	raw      map[string]any
	model    *openapi3.T
	router   routers.Router
}

// The status page's files are text the validator reads as strings.
func init() {
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(body)
			return string(b), err
		})
	}
}

func loadAPIDoc(t *testing.T, listener string) *apiDoc {
	t.Helper()
	data, err := openapi.Document(listener)
	if err != nil {
		t.Fatalf("Document(%s): %v", listener, err)
	}
	d := &apiDoc{listener: listener}
	if err := json.Unmarshal(data, &d.raw); err != nil {
		t.Fatalf("%s: %v", listener, err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		t.Fatalf("%s: loading the document: %v", listener, err)
	}
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Errorf("%s: OpenAPI version %q, want 3.1.0", listener, doc.OpenAPI)
	}
	d.model = doc
	// The router matches a request's host against the servers; the
	// tests' requests go to no real host, so it routes on a copy without
	// them.
	routed := *doc
	routed.Servers = nil
	if d.router, err = legacy.NewRouter(&routed); err != nil {
		t.Fatalf("%s: router: %v", listener, err)
	}
	return d
}

// validationOptions: every security requirement is the handlers' to
// check (the tests send real tokens), and an answer's status must be
// documented.
func validationOptions() *openapi3filter.Options {
	return &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true, MultiError: true}
}

// requestInput routes req to its documented operation.
func (d *apiDoc) requestInput(req *http.Request) (*openapi3filter.RequestValidationInput, error) {
	route, params, err := d.router.FindRoute(req)
	if err != nil {
		return nil, err
	}
	return &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: validationOptions()}, nil
}

// validateRequest checks req (its body is read and put back) against the
// document.
func (d *apiDoc) validateRequest(req *http.Request) error {
	in, err := d.requestInput(req)
	if err != nil {
		return err
	}
	return openapi3filter.ValidateRequest(context.Background(), in)
}

// operations lists the document's "METHOD /path" pairs.
func (d *apiDoc) operations() []string {
	var ops []string
	for p, item := range d.raw["paths"].(map[string]any) {
		for m := range item.(map[string]any) {
			if slices.Contains(knownMethods, strings.ToUpper(m)) {
				ops = append(ops, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

// operation is the raw operation of "METHOD /path".
func (d *apiDoc) operation(op string) map[string]any {
	method, path, _ := strings.Cut(op, " ")
	item, _ := d.raw["paths"].(map[string]any)[path].(map[string]any)
	o, _ := item[strings.ToLower(method)].(map[string]any)
	return o
}

// resolve follows a local $ref (one or more steps).
func (d *apiDoc) resolve(v any) map[string]any {
	m, _ := v.(map[string]any)
	for m != nil {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = d.raw
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// examples are a media type object's examples by name ("" for the
// single "example").
func (d *apiDoc) examples(media map[string]any) map[string]any {
	out := map[string]any{}
	if ex, ok := media["example"]; ok {
		out[""] = ex
	}
	if exs, ok := media["examples"].(map[string]any); ok {
		for name, ex := range exs {
			out[name] = d.resolve(ex)["value"]
		}
	}
	return out
}

// parameters are op's parameters, path-level ones included, resolved.
func (d *apiDoc) parameters(op string) []map[string]any {
	_, path, _ := strings.Cut(op, " ")
	item, _ := d.raw["paths"].(map[string]any)[path].(map[string]any)
	var out []map[string]any
	for _, src := range []any{item["parameters"], d.operation(op)["parameters"]} {
		list, _ := src.([]any)
		for _, p := range list {
			out = append(out, d.resolve(p))
		}
	}
	return out
}

// successStatus is op's documented 2xx status (the lowest).
func (d *apiDoc) successStatus(t *testing.T, op string) int {
	t.Helper()
	for code := range 100 {
		if _, ok := d.operation(op)["responses"].(map[string]any)[strconv.Itoa(200+code)]; ok {
			return 200 + code
		}
	}
	t.Fatalf("%s %s: no 2xx answer documented", d.listener, op)
	return 0
}

// checkAnswer validates an answer to req against the document: its
// status must be documented for the operation and its body match that
// status's schema.
func (d *apiDoc) checkAnswer(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	in, err := d.requestInput(req)
	if err == nil {
		err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: status, Header: header.Clone(),
			Body: io.NopCloser(bytes.NewReader(body)), Options: validationOptions()})
	}
	if err != nil {
		t.Errorf("%s %s %s: %d %s does not match the document:\n\t%v", d.listener, req.Method, req.URL, status, body, err)
	}
}

// checkSchema validates body against the components schema name.
func (d *apiDoc) checkSchema(t *testing.T, name string, body []byte) {
	t.Helper()
	sp, ok := d.model.Components.Schemas[name]
	if !ok || sp.Value == nil {
		t.Fatalf("%s: no schema %s", d.listener, name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %s is no JSON: %v", d.listener, body, err)
	}
	if err := sp.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		t.Errorf("%s: %s does not match schema %s:\n\t%v", d.listener, body, name, err)
	}
}

// routesOf lists a router's "METHOD /pattern" pairs.
func routesOf(t *testing.T, h http.Handler) []string {
	t.Helper()
	var routes []string
	err := chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatalf("chi.Walk: %v", err)
	}
	sort.Strings(routes)
	return routes
}

// exampleStep is one request the example walk sends: an operation and,
// for one with several request or answer examples, the example's name.
type exampleStep struct{ op, example string }

// exampleWalk is the order in which every documented request example is
// sent to the real handlers, so that each finds what the ones before it
// made (an account, a token, an agent, a ticket, a hold). A route added
// to a document must be added here, or TestOpenAPI fails.
var exampleWalk = map[string][]exampleStep{
	"public": {
		{"POST /create_account", ""}, {"POST /login", ""}, {"POST /agents", ""}, {"GET /agents", ""},
		{"GET /agents/{agent_id}", ""}, {"GET /agents/{agent_id}/schedule", ""},
		{"POST /create_ticket", ""}, {"GET /tickets/{ticket_id}", ""}, {"GET /tickets", ""},
		{"GET /tickets/at-risk", ""}, {"GET /capacity", ""}, {"GET /calendar", ""},
		{"GET /admissions/recent", ""}, {"GET /status", ""}, {"GET /status/{file}", ""}, {"POST /cancel_ticket", ""},
		{"PATCH /agents/{agent_id}", "unavailable"}, {"PATCH /agents/{agent_id}", "available"},
		{"GET /healthz", ""}, {"GET /readyz", "ready"}, {"GET /metrics", ""}, {"GET /openapi.json", ""},
		{"POST /logout", ""},
	},
	"internal": {
		{"POST /validate_eta", ""}, {"POST /allocate_slot", ""},
		{"GET /healthz", ""}, {"GET /readyz", "ready"}, {"GET /openapi.json", ""},
	},
	"ops": {{"GET /healthz", ""}, {"GET /readyz", "ready"}, {"GET /metrics", ""}, {"GET /openapi.json", ""}},
}

// learnedFields are the answer members whose example value stands for
// whatever the real answer holds: after each step, the example's value
// is replaced by the real one in every later example.
var learnedFields = []string{"client_id", "agent_id", "ticket_id", "slot_id", "token"}

// exampleRun carries what the walk learnt from the real answers.
type exampleRun struct {
	subs  map[string]string // example value -> real value
	token string
}

func (r *exampleRun) substitute(s string) string {
	// Longest first: no example value is then cut by a shorter one.
	keys := make([]string, 0, len(r.subs))
	for k := range r.subs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		s = strings.ReplaceAll(s, k, r.subs[k])
	}
	return s
}

// sendExample sends step's request example (path parameters from their
// examples, header parameter examples, the body example) to h, checks
// that it answers the documented success status with an answer that
// matches the document, and learns the ids of the answer.
func (d *apiDoc) sendExample(t *testing.T, h http.Handler, run *exampleRun, step exampleStep) {
	t.Helper()
	if d.operation(step.op) == nil {
		t.Fatalf("%s: exampleWalk's %s is not in the document", d.listener, step.op)
	}
	method, path, _ := strings.Cut(step.op, " ")
	header := http.Header{}
	for _, p := range d.parameters(step.op) {
		ex, ok := p["example"].(string)
		switch {
		case !ok:
		case p["in"] == "path":
			path = strings.ReplaceAll(path, "{"+p["name"].(string)+"}", ex)
		case p["in"] == "header":
			header.Set(p["name"].(string), ex)
		}
	}
	var body []byte
	if rb := d.resolve(d.operation(step.op)["requestBody"]); rb != nil {
		media := rb["content"].(map[string]any)["application/json"].(map[string]any)
		ex, ok := d.examples(media)[step.example]
		if !ok {
			t.Fatalf("%s %s: no request example %q", d.listener, step.op, step.example)
		}
		body, _ = json.Marshal(ex)
		header.Set("Content-Type", "application/json")
	}
	path = run.substitute(path)
	req := httptest.NewRequest(method, path, strings.NewReader(run.substitute(string(body))))
	for k, vs := range header {
		req.Header[k] = vs
	}
	if run.token != "" && d.listener == "public" {
		req.Header.Set("Authorization", "Bearer "+run.token)
	}
	if err := d.validateRequest(req); err != nil {
		t.Errorf("%s %s example %q: the request does not match the document:\n\t%v", d.listener, step.op, step.example, err)
	}
	req.Body = io.NopCloser(strings.NewReader(run.substitute(string(body))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	want := d.successStatus(t, step.op)
	if rec.Code != want {
		t.Fatalf("%s %s example %q: %d %s, want %d", d.listener, step.op, step.example, rec.Code, rec.Body.Bytes(), want)
	}
	d.checkAnswer(t, req, rec.Code, rec.Header(), rec.Body.Bytes())

	// Learn: the documented answer example of this status (of the same
	// name, else the only one) against the real answer.
	resp := d.resolve(d.operation(step.op)["responses"].(map[string]any)[strconv.Itoa(want)])
	media, _ := resp["content"].(map[string]any)["application/json"].(map[string]any)
	if media == nil {
		return
	}
	exs := d.examples(media)
	ex, ok := exs[step.example]
	if !ok && len(exs) == 1 {
		for _, only := range exs {
			ex = only
		}
	}
	exObj, _ := ex.(map[string]any)
	var real map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &real); err != nil {
		t.Fatalf("%s %s: %v", d.listener, step.op, err)
	}
	// The example shows every member the real answer has.
	for k := range real {
		if _, ok := exObj[k]; !ok {
			t.Errorf("%s %s: the answer has %q, which its documented example %q lacks", d.listener, step.op, k, step.example)
		}
	}
	for _, f := range learnedFields {
		e, eok := exObj[f].(string)
		r, rok := real[f].(string)
		if eok && rok && e != r {
			run.subs[e] = r
		}
		if f == "token" && rok {
			run.token = r
		}
	}
}

// checkAnswerExamples validates every documented answer example against
// its own status's schema, as if a handler had sent it.
func (d *apiDoc) checkAnswerExamples(t *testing.T) int {
	t.Helper()
	n := 0
	for _, op := range d.operations() {
		method, path, _ := strings.Cut(op, " ")
		for _, p := range d.parameters(op) {
			if ex, ok := p["example"].(string); ok && p["in"] == "path" {
				path = strings.ReplaceAll(path, "{"+p["name"].(string)+"}", ex)
			}
		}
		for code, r := range d.operation(op)["responses"].(map[string]any) {
			resp := d.resolve(r)
			status, _ := strconv.Atoi(code)
			header := http.Header{}
			headers, _ := resp["headers"].(map[string]any)
			for name, h := range headers {
				if d.resolve(h)["required"] == true {
					header.Set(name, "1")
				}
			}
			content, _ := resp["content"].(map[string]any)
			for mt, m := range content {
				for _, ex := range d.examples(m.(map[string]any)) {
					var body []byte
					if s, ok := ex.(string); ok && mt != "application/json" {
						body = []byte(s)
					} else {
						body, _ = json.Marshal(ex)
					}
					header.Set("Content-Type", mt)
					d.checkAnswer(t, httptest.NewRequest(method, path, nil), status, header, body)
					n++
				}
			}
		}
	}
	return n
}

// TestOpenAPI keeps ingress/openapi's documents true, through the real
// routers over real NATS and Postgres: each listener's routes are
// exactly its documented operations; each document is valid OpenAPI 3.1;
// every answer example matches its schema; every request example, sent
// in exampleWalk's order, is accepted with its documented status; the
// real answers to those and to provoked errors (400, 401, 403, 404, 405,
// 409, 410, 413, 415, 422) match the documented answer of their status;
// and /openapi.json serves the document on each listener.
func TestOpenAPI(t *testing.T) {
	e := newTicketEnv(t, ticketEnvOptions{})
	opsReg := prometheus.NewRegistry()
	ops, err := NewOps(Config{Metrics: opsReg, Gatherer: opsReg, Ready: func(context.Context) error { return nil }})
	if err != nil {
		t.Fatalf("NewOps: %v", err)
	}
	handlers := map[string]http.Handler{"public": e.handler, "internal": e.internal, "ops": ops}
	docs := map[string]*apiDoc{}
	for _, l := range openapi.Listeners {
		docs[l] = loadAPIDoc(t, l)
	}

	t.Run("routes", func(t *testing.T) {
		for _, l := range openapi.Listeners {
			routes, documented := routesOf(t, handlers[l]), docs[l].operations()
			for _, r := range routes {
				if !slices.Contains(documented, r) {
					t.Errorf("%s: route %s is not in the document", l, r)
				}
			}
			for _, op := range documented {
				if !slices.Contains(routes, op) {
					t.Errorf("%s: documented %s is no route", l, op)
				}
			}
			var walked []string
			for _, s := range exampleWalk[l] {
				walked = append(walked, s.op)
			}
			for _, op := range documented {
				if !slices.Contains(walked, op) {
					t.Errorf("%s: %s is not in exampleWalk", l, op)
				}
			}
		}
	})

	t.Run("valid", func(t *testing.T) {
		for _, l := range openapi.Listeners {
			// Examples too: each must match its own schema.
			if err := docs[l].model.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
				t.Errorf("%s: not valid OpenAPI 3.1:\n\t%v", l, err)
			}
		}
	})

	t.Run("answer examples", func(t *testing.T) {
		for _, l := range openapi.Listeners {
			if n := docs[l].checkAnswerExamples(t); n < len(docs[l].operations()) {
				t.Errorf("%s: %d answer examples for %d operations", l, n, len(docs[l].operations()))
			}
		}
	})

	run := &exampleRun{subs: map[string]string{}}
	t.Run("request examples", func(t *testing.T) {
		// Every request example of the documents is in the walk.
		for _, l := range openapi.Listeners {
			d := docs[l]
			for _, op := range d.operations() {
				rb := d.resolve(d.operation(op)["requestBody"])
				if rb == nil {
					continue
				}
				exs := d.examples(rb["content"].(map[string]any)["application/json"].(map[string]any))
				if len(exs) == 0 {
					t.Errorf("%s %s: no request example", l, op)
				}
				for name := range exs {
					if !slices.Contains(exampleWalk[l], exampleStep{op, name}) {
						t.Errorf("%s %s: request example %q is not in exampleWalk", l, op, name)
					}
				}
			}
		}
		for _, l := range []string{"public", "internal", "ops"} {
			for _, step := range exampleWalk[l] {
				docs[l].sendExample(t, handlers[l], run, step)
			}
		}
	})

	t.Run("error answers", func(t *testing.T) {
		a, agent := e.tenantWithAgent(t, "Other Corp", "ops@other.example")
		other := e.openAccount(t, "Third Corp", "ops@third.example")
		big := `{"client_name":"` + strings.Repeat("x", 70<<10) + `"}`
		cases := []struct {
			listener string
			status   int
			req      request
		}{
			{"public", 400, request{method: "POST", path: "/create_account", body: `{"client_name":"X","official_email":"nope","password":"correct horse battery"}`}},
			{"public", 400, request{method: "POST", path: "/create_account", body: `{"client_name":"X","extra":1}`}},
			{"public", 400, request{method: "POST", path: "/create_account", body: `{"client_name":`}},
			{"public", 409, request{method: "POST", path: "/create_account", body: `{"client_name":"Again","official_email":"ops@other.example","password":"correct horse battery"}`}},
			{"public", 413, request{method: "POST", path: "/create_account", body: big}},
			{"public", 415, request{method: "POST", path: "/create_account", contentType: "text/plain", body: `{}`}},
			{"public", 400, request{method: "POST", path: "/login", body: `{"client_id":"NOT AN ID","password":"x"}`}},
			{"public", 401, request{method: "POST", path: "/login", body: jsonBody(map[string]any{"client_id": a.id, "password": "wrong password!"})}},
			{"public", 401, request{method: "GET", path: "/agents"}},
			{"public", 401, request{method: "POST", path: "/create_ticket", token: "not-a-token", body: `{}`}},
			{"public", 403, request{method: "POST", path: "/create_ticket", token: a.token, body: jsonBody(map[string]any{"client_id": other.id, "ticket_type": "GOLD"})}},
			{"public", 400, request{method: "POST", path: "/create_ticket", token: a.token, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "gold"})}},
			{"public", 201, request{method: "POST", path: "/create_ticket", token: a.token, header: http.Header{"Idempotency-Key": {"k1"}}, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD"})}},
			{"public", 201, request{method: "POST", path: "/create_ticket", token: a.token, header: http.Header{"Idempotency-Key": {"k1"}}, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD"})}},
			{"public", 422, request{method: "POST", path: "/create_ticket", token: a.token, header: http.Header{"Idempotency-Key": {"k1"}}, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "SILVER"})}},
			{"public", 403, request{method: "POST", path: "/agents", token: a.token, body: jsonBody(map[string]any{"client_id": other.id, "name": "X"})}},
			{"public", 404, request{method: "PATCH", path: "/agents/nosuchagent", token: a.token, body: `{"agent_status":"available"}`}},
			{"public", 400, request{method: "PATCH", path: "/agents/" + agent, token: a.token, body: `{"agent_status":"away"}`}},
			{"public", 404, request{method: "GET", path: "/agents/nosuchagent", token: a.token}},
			{"public", 400, request{method: "GET", path: "/agents/" + agent + "?x=1", token: a.token}},
			{"public", 400, request{method: "GET", path: "/agents/" + agent + "/schedule?hours=9", token: a.token}},
			{"public", 404, request{method: "GET", path: "/agents/nosuchagent/schedule", token: a.token}},
			{"public", 404, request{method: "GET", path: "/tickets/nosuchticket", token: a.token}},
			{"public", 404, request{method: "POST", path: "/cancel_ticket", token: a.token, body: `{"ticket_id":"nosuchticket"}`}},
			{"public", 400, request{method: "GET", path: "/tickets?limit=0", token: a.token}},
			{"public", 400, request{method: "GET", path: "/tickets?cursor=AAAA", token: a.token}},
			{"public", 400, request{method: "GET", path: "/tickets?color=red", token: a.token}},
			{"public", 400, request{method: "GET", path: "/capacity?x=1", token: a.token}},
			{"public", 400, request{method: "GET", path: "/tickets/at-risk?x=1", token: a.token}},
			{"public", 200, request{method: "GET", path: "/agents/" + agent + "/schedule?hours=1", token: a.token}},
			{"public", 400, request{method: "GET", path: "/calendar?hours=9", token: a.token}},
			{"public", 401, request{method: "GET", path: "/calendar", token: "not-a-token"}},
			{"public", 200, request{method: "GET", path: "/calendar?hours=1", token: a.token}},
			{"public", 400, request{method: "GET", path: "/admissions/recent?x=1", token: a.token}},
			{"public", 200, request{method: "GET", path: "/admissions/recent", token: a.token}},
			{"public", 400, request{method: "POST", path: "/create_ticket", token: a.token, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD", "subject": strings.Repeat("s", 201)})}},
			{"public", 404, request{method: "GET", path: "/status/nothing.js"}},
			{"public", 400, request{method: "GET", path: "/status?token=x"}},
			{"public", 200, request{method: "PATCH", path: "/agents/" + agent, token: a.token, body: `{"agent_status":"unavailable"}`}},
			{"public", 409, request{method: "POST", path: "/create_ticket", token: a.token, body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD"})}},
			{"public", 403, request{method: "POST", path: "/logout", token: a.token, body: jsonBody(map[string]any{"client_id": other.id})}},
			{"internal", 409, request{method: "POST", path: "/validate_eta", body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD"})}},
			{"internal", 404, request{method: "POST", path: "/validate_eta", body: `{"client_id":"nosuchclient","ticket_type":"GOLD"}`}},
			{"internal", 400, request{method: "POST", path: "/validate_eta", body: `{"client_id":"nosuchclient"}`}},
			{"internal", 410, request{method: "POST", path: "/allocate_slot", body: jsonBody(map[string]any{"client_id": a.id, "ticket_type": "GOLD", "slot_id": e.clock.Now().UTC().Truncate(time.Minute).Add(2*time.Minute).Format("200601021504") + "-" + agent + "-4jj4sgrpdu7p"})}},
			{"internal", 415, request{method: "POST", path: "/allocate_slot", contentType: "text/plain", body: "x"}},
			{"internal", 413, request{method: "POST", path: "/allocate_slot", body: big}},
		}
		for _, c := range cases {
			h := handlers[c.listener]
			resp := doOn(t, h, c.req)
			if resp.status != c.status {
				t.Errorf("%s %s %s: %d %s, want %d", c.listener, c.req.method, c.req.path, resp.status, resp.raw, c.status)
				continue
			}
			r := httptest.NewRequest(c.req.method, c.req.path, nil)
			docs[c.listener].checkAnswer(t, r, resp.status, resp.header, resp.raw)
		}
		// The router's own answers, on every listener: an unknown path and
		// a known one with another method.
		for _, l := range openapi.Listeners {
			d := docs[l]
			resp := doOn(t, handlers[l], request{method: "GET", path: "/nowhere"})
			if resp.status != http.StatusNotFound {
				t.Errorf("%s GET /nowhere: %d", l, resp.status)
			}
			d.checkSchema(t, "Error", resp.raw)
			resp = doOn(t, handlers[l], request{method: "DELETE", path: "/healthz"})
			if resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") == "" {
				t.Errorf("%s DELETE /healthz: %d, Allow %q", l, resp.status, resp.header.Get("Allow"))
			}
			d.checkSchema(t, "Error", resp.raw)
			for _, name := range []string{"NotFound", "MethodNotAllowed"} {
				if _, ok := d.model.Components.Responses[name]; !ok {
					t.Errorf("%s: no components.responses.%s", l, name)
				}
			}
		}
	})

	t.Run("served", func(t *testing.T) {
		for _, l := range openapi.Listeners {
			want, _ := openapi.Document(l)
			rec := httptest.NewRecorder()
			handlers[l].ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
			if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), want) || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("%s GET /openapi.json: %d %q, not the document", l, rec.Code, rec.Header().Get("Content-Type"))
			}
			etag := rec.Header().Get("ETag")
			req := httptest.NewRequest("GET", "/openapi.json", nil)
			req.Header.Set("If-None-Match", etag)
			rec = httptest.NewRecorder()
			handlers[l].ServeHTTP(rec, req)
			if etag == "" || rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
				t.Errorf("%s GET /openapi.json If-None-Match %q: %d", l, etag, rec.Code)
			}
		}
	})
}
