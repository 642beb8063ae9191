package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops/testkit"
	"tms/subjects"
)

// labelled reads the value of the counter, or the sample count of the
// histogram, name with exactly the labels want (0 when absent), and
// whether the series exists.
func labelled(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount()), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// admissionCounts is every child of tms_admissions_total, by type and
// outcome.
type admissionCounts map[[2]string]float64

func readAdmissions(t testing.TB, g prometheus.Gatherer) admissionCounts {
	t.Helper()
	c := admissionCounts{}
	for _, typ := range admissionTypes {
		for _, o := range admissionOutcomes {
			v, ok := labelled(t, g, "tms_admissions_total", map[string]string{"type": typ, "outcome": o})
			if !ok {
				t.Fatalf("tms_admissions_total{type=%q,outcome=%q} is not exposed", typ, o)
			}
			c[[2]string{typ, o}] = v
		}
	}
	return c
}

// wantAdmissions checks that exactly the children in want grew from
// before, by the amounts given.
func wantAdmissions(t testing.TB, g prometheus.Gatherer, before admissionCounts, want admissionCounts) {
	t.Helper()
	after := readAdmissions(t, g)
	for k, v := range after {
		if d := v - before[k]; d != want[k] {
			t.Errorf("tms_admissions_total{type=%q,outcome=%q} grew by %v, want %v", k[0], k[1], d, want[k])
		}
	}
}

func natsCreate(t testing.TB, e *ticketEnv, a account, typ string) map[string]any {
	t.Helper()
	_, body := e.natsRequest(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": typ})
	return body
}

// Accepted, no slot, invalid and rate limited, over HTTP and the NATS API:
// each decision is counted once under the type the request asked for,
// also when the refusal came before its body was decoded; a type that is
// none is "invalid". The NATS API's requests are counted by operation and
// status as they are answered.
func TestAdmissionsCountEachOutcome(t *testing.T) {
	t.Parallel()
	const burst = 12
	limClock := testkit.NewClock(time.Now())
	e := newTicketEnv(t, ticketEnvOptions{configure: func(c *Config) {
		c.Overload = newOverload(t, c, OverloadConfig{TenantRate: 1, TenantBurst: burst, Now: limClock.Now})
	}})
	// Every child is there from the start, at zero.
	for k, v := range readAdmissions(t, e.metrics) {
		if v != 0 {
			t.Fatalf("tms_admissions_total%v = %v before any request", k, v)
		}
	}
	for _, op := range append(natsOpNames(), natsOpUnknown) {
		if _, ok := labelled(t, e.metrics, "tms_nats_api_requests_total", map[string]string{"op": op, "status": "503"}); !ok {
			t.Errorf("tms_nats_api_requests_total{op=%q,status=503} is not exposed from the start", op)
		}
	}

	busy, _ := e.tenantWithAgent(t, "Busy", "busy@example.com")
	e.createWhenReady(t, busy, subjects.Gold) // the responder has seen the agent
	empty := e.openAccount(t, "Empty", "empty@example.com")
	noisy := e.openAccount(t, "Noisy", "noisy@example.com")
	// Every bucket full again, whatever the warm-up took; then the noisy
	// tenant empties its own. The counted requests of the others stay
	// within a burst.
	limClock.Advance(time.Hour)
	for range burst {
		e.must(t, http.StatusNotFound, request{method: "GET", path: "/tickets/tnosuchticket", token: noisy.token})
	}

	before := readAdmissions(t, e.metrics)
	if r := e.create(t, busy, subjects.Silver, nil); r.status != http.StatusCreated {
		t.Fatalf("HTTP SILVER: %d %s", r.status, r.raw)
	}
	if b := natsCreate(t, e, busy, subjects.Bronze); b["code"] != float64(http.StatusCreated) {
		t.Fatalf("NATS BRONZE: %v", b)
	}
	if r := e.create(t, empty, subjects.Gold, nil); r.status != http.StatusConflict || r.body["error"] != codeSLAUnavailable {
		t.Fatalf("HTTP GOLD without agents: %d %s", r.status, r.raw)
	}
	if b := natsCreate(t, e, empty, subjects.Gold); b["error"] != codeSLAUnavailable {
		t.Fatalf("NATS GOLD without agents: %v", b)
	}
	if r := e.create(t, busy, "PLATINUM", nil); r.status != http.StatusBadRequest {
		t.Fatalf("HTTP PLATINUM: %d %s", r.status, r.raw)
	}
	if r := e.do(t, request{method: "POST", path: "/create_ticket", token: busy.token, body: `{"ticket_type":`}); r.status != http.StatusBadRequest {
		t.Fatalf("HTTP broken JSON: %d %s", r.status, r.raw)
	}
	if r := e.do(t, request{method: "POST", path: "/create_ticket",
		body: jsonBody(map[string]string{"client_id": busy.id, "ticket_type": subjects.Gold})}); r.status != http.StatusUnauthorized {
		t.Fatalf("HTTP without a token: %d %s", r.status, r.raw)
	}
	if b := natsCreate(t, e, busy, ""); b["code"] != float64(http.StatusBadRequest) {
		t.Fatalf("NATS without a type: %v", b)
	}
	if r := e.do(t, request{method: "POST", path: "/create_ticket", token: busy.token,
		body: jsonBody(map[string]string{"client_id": empty.id, "ticket_type": subjects.Bronze})}); r.status != http.StatusForbidden {
		t.Fatalf("HTTP for another tenant: %d %s", r.status, r.raw)
	}
	if _, b := e.natsRequest(t, busy.id, subjects.OpCreateTicket,
		map[string]string{"client_id": empty.id, "ticket_type": subjects.Bronze}); b["code"] != float64(http.StatusForbidden) {
		t.Fatalf("NATS for another tenant: %v", b)
	}
	wantRefused(t, "HTTP over the rate", e.create(t, noisy, subjects.Silver, nil), http.StatusTooManyRequests, codeRateLimited, "1")
	reply, body := e.natsRequest(t, noisy.id, subjects.OpCreateTicket, map[string]string{"client_id": noisy.id, "ticket_type": subjects.Bronze})
	wantNATSRefused(t, "NATS over the rate", reply, body, http.StatusTooManyRequests, codeRateLimited, "1")
	// Not create_ticket: no admission decision.
	e.natsRequest(t, busy.id, subjects.OpGetTicket, map[string]string{"ticket_id": "tnosuchticket"})
	e.natsRequest(t, busy.id, "no_such_op", map[string]string{})

	wantAdmissions(t, e.metrics, before, admissionCounts{
		{subjects.Silver, outcomeAccepted}:     1,
		{subjects.Bronze, outcomeAccepted}:     1,
		{subjects.Gold, outcomeNoSlot}:         2,
		{admissionTypeInvalid, outcomeInvalid}: 3, // PLATINUM, broken JSON, no type
		{subjects.Gold, outcomeInvalid}:        1, // no token
		{subjects.Bronze, outcomeInvalid}:      2, // another tenant's
		{subjects.Silver, outcomeRateLimited}:  1,
		{subjects.Bronze, outcomeRateLimited}:  1,
	})

	for _, c := range []struct {
		op, status string
		want       float64
	}{
		{subjects.OpCreateTicket, "201", 1},
		{subjects.OpCreateTicket, "409", 1},
		{subjects.OpCreateTicket, "400", 1},
		{subjects.OpCreateTicket, "403", 1},
		{subjects.OpCreateTicket, "429", 1},
		{subjects.OpGetTicket, "404", 1},
		{natsOpUnknown, "404", 1},
		{subjects.OpCreateTicket, "503", 0},
	} {
		if got, _ := labelled(t, e.metrics, "tms_nats_api_requests_total", map[string]string{"op": c.op, "status": c.status}); got != c.want {
			t.Errorf("tms_nats_api_requests_total{op=%q,status=%q} = %v, want %v", c.op, c.status, got, c.want)
		}
	}
	if got, _ := labelled(t, e.metrics, "tms_nats_api_request_duration_seconds", map[string]string{"op": subjects.OpCreateTicket}); got != 5 {
		t.Errorf("tms_nats_api_request_duration_seconds{op=create_ticket} has %v samples, want 5", got)
	}
}

// A create_ticket shed by the in-flight bound is "shed" on HTTP and NATS;
// one whose ETA responders do not answer is "unavailable".
func TestAdmissionsCountShedAndUnavailable(t *testing.T) {
	t.Parallel()
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: time.Minute, configure: func(c *Config) {
		c.Overload = newOverload(t, c, OverloadConfig{MaxInFlight: 1})
	}})
	a := e.openAccount(t, "Busy", "busy@example.com")
	resp := newBlockingResponder(t, e, a.id)
	before := readAdmissions(t, e.metrics)

	held := make(chan response, 1)
	go func() { held <- e.create(t, a, subjects.Gold, nil) }()
	resp.waitArrived(t)
	wantRefused(t, "HTTP create_ticket", e.create(t, a, subjects.Silver, nil), http.StatusServiceUnavailable, codeOverloaded, "1")
	reply, body := e.natsRequest(t, a.id, subjects.OpCreateTicket, map[string]string{"client_id": a.id, "ticket_type": subjects.Bronze})
	wantNATSRefused(t, "NATS create_ticket", reply, body, http.StatusServiceUnavailable, codeOverloaded, "1")
	resp.unblock()
	if r := <-held; r.status != http.StatusConflict {
		t.Fatalf("the held create_ticket: %d %s", r.status, r.raw)
	}
	wantAdmissions(t, e.metrics, before, admissionCounts{
		{subjects.Gold, outcomeNoSlot}:      1,
		{subjects.Silver, outcomeShed}:      1,
		{subjects.Bronze, outcomeShed}:      1,
		{subjects.Gold, outcomeUnavailable}: 0,
	})
	if got, _ := labelled(t, e.metrics, "tms_nats_api_requests_total", map[string]string{"op": subjects.OpCreateTicket, "status": "503"}); got != 1 {
		t.Errorf("tms_nats_api_requests_total{op=create_ticket,status=503} = %v, want 1", got)
	}

	// Nobody answers the ETA requests of this tenant.
	u := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: 300 * time.Millisecond})
	b := u.openAccount(t, "Alone", "alone@example.com")
	before = readAdmissions(t, u.metrics)
	if r := u.create(t, b, subjects.Gold, nil); r.status != http.StatusServiceUnavailable || r.body["error"] != codeUnavailable {
		t.Fatalf("HTTP create_ticket without responders: %d %s", r.status, r.raw)
	}
	if body := natsCreate(t, u, b, subjects.Silver); body["error"] != codeUnavailable {
		t.Fatalf("NATS create_ticket without responders: %v", body)
	}
	wantAdmissions(t, u.metrics, before, admissionCounts{
		{subjects.Gold, outcomeUnavailable}:   1,
		{subjects.Silver, outcomeUnavailable}: 1,
	})
}

// logRecords keeps the records a logger wrote.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// natsLines is the "nats request" records of op, as level and attributes.
func (l *logRecords) natsLines(op string) []natsLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []natsLine
	for _, r := range l.records {
		if r.Message != "nats request" {
			continue
		}
		line := natsLine{level: r.Level, attrs: map[string]slog.Value{}}
		r.Attrs(func(a slog.Attr) bool {
			line.attrs[a.Key] = a.Value
			return true
		})
		if line.attrs["op"].String() == op {
			out = append(out, line)
		}
	}
	return out
}

type natsLine struct {
	level slog.Level
	attrs map[string]slog.Value
}

// The NATS API logs like the HTTP access log: a hot operation's answers
// at debug but for one sampled info line a period, saying how many it
// stands for; a 5xx at error with its cause; a request for no operation
// (not hot) at info each time, labelled unknown.
func TestNATSAPILogsLikeTheAccessLog(t *testing.T) {
	t.Parallel()
	logs := &logRecords{}
	var cfg *Config
	e := newTicketEnv(t, ticketEnvOptions{noResponder: true, etaTimeout: 300 * time.Millisecond, configure: func(c *Config) {
		c.Logger = slog.New(logs)
		cfg = c
	}})
	// The env's NATS API gives way to one over the same configuration
	// whose sampling period no test outlasts.
	e.stopAll()
	api, err := NewNATSAPI(*cfg)
	if err != nil {
		t.Fatalf("NewNATSAPI: %v", err)
	}
	api.sample = newSampler(time.Hour, time.Now)
	e.run("nats api", api.Run)
	testkit.Eventually(t, 20*time.Second, started(api), "the NATS API to start")

	a := e.openAccount(t, "Logged", "logged@example.com")
	for range 3 {
		e.natsRequest(t, a.id, subjects.OpGetTicket, map[string]string{"ticket_id": "tnosuchticket"})
	}
	e.natsRequest(t, a.id, "no_such_op", map[string]string{})
	e.natsRequest(t, a.id, "no_such_op", map[string]string{})
	natsCreate(t, e, a, subjects.Gold) // no responder: 503 unavailable

	// The lines are written just after the replies.
	testkit.Eventually(t, 10*time.Second, func() bool {
		return len(logs.natsLines(subjects.OpGetTicket)) == 3 && len(logs.natsLines(natsOpUnknown)) == 2 &&
			len(logs.natsLines(subjects.OpCreateTicket)) == 1
	}, "the NATS API's lines")
	gets := logs.natsLines(subjects.OpGetTicket)
	if gets[0].level != slog.LevelInfo || !gets[0].attrs["sampled"].Bool() || gets[0].attrs["unlogged_since"].Int64() != 0 {
		t.Errorf("first get_ticket line: %v %v, want the sampled info line", gets[0].level, gets[0].attrs)
	}
	for i, l := range gets[1:] {
		if l.level != slog.LevelDebug {
			t.Errorf("get_ticket line %d: %v, want debug within the period", i+2, l.level)
		}
	}
	if s := gets[0].attrs["status"].Int64(); s != http.StatusNotFound || gets[0].attrs["tenant"].String() != a.id {
		t.Errorf("get_ticket line: %v", gets[0].attrs)
	}
	for _, l := range logs.natsLines(natsOpUnknown) {
		if l.level != slog.LevelInfo || l.attrs["status"].Int64() != http.StatusNotFound {
			t.Errorf("unknown operation's line: %v %v, want info 404", l.level, l.attrs)
		}
	}
	c := logs.natsLines(subjects.OpCreateTicket)[0]
	if c.level != slog.LevelError || c.attrs["status"].Int64() != http.StatusServiceUnavailable || c.attrs["err"].String() == "" {
		t.Errorf("create_ticket 503 line: %v %v, want error with its cause", c.level, c.attrs)
	}
}

// The type of a body refused before it was decoded is read leniently and
// bounded: only a JSON object's string ticket_type counts.
func TestPeekTicketType(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body string
		want string
	}{
		{`{"client_id":"x","ticket_type":"GOLD"}`, subjects.Gold},
		{`{"ticket_type":"PLATINUM"}`, admissionTypeInvalid},
		{`{"ticket_type":7}`, admissionTypeInvalid},
		{`{"ticket_type":`, admissionTypeInvalid},
		{`[]`, admissionTypeInvalid},
		{``, admissionTypeInvalid},
		{`{"ticket_type":"SILVER","pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`, admissionTypeInvalid},
	} {
		if got := admissionType(peekTicketType([]byte(c.body))); got != c.want {
			t.Errorf("%.40q: type %q, want %q", c.body, got, c.want)
		}
	}
}
