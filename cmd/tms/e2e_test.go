package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tms/ops/testkit"
)

// tmsBin is the binary under test, built once by TestMain.
var tmsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tms-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmsBin = filepath.Join(dir, "tms")
	if err := build(tmsBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// goleak.VerifyTestMain would exit before the temp dir is removed.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// goBinary is the go command: the one on PATH, else where the Makefile
// and CI install it (/usr/local/go/bin, which make adds to PATH too).
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func build(out string) error {
	goBin := goBinary()
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, ".")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	return nil
}

// proc is one running tms process. Its stdout (JSON logs) is kept by line
// so tests can wait for a log event; stderr is kept whole.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []map[string]any
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func startTMS(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(tmsBin, args...)
	// Tests run several workers at once: each its own operations port
	// unless the test names one (the env given comes after, and wins).
	p.cmd.Env = append(cleanEnv(), "TMS_OPS_ADDR=127.0.0.1:0")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Env = append(p.cmd.Env, "GORACE=halt_on_error=1")
	p.cmd.Stdout = &lineWriter{p: p}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start tms: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("tms %s stdout:\n%s\nstderr:\n%s", args[0], p.stdoutText(), p.stderrText())
		}
	})
	return p
}

// cleanEnv is the test's environment without TMS_* settings of the
// developer running it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TMS_") {
			env = append(env, kv)
		}
	}
	return env
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// lineWriter parses complete JSON log lines; anything else is kept as a
// "raw" entry so it still shows when a test fails.
type lineWriter struct {
	p       *proc
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := w.partial[:i]
		w.partial = w.partial[i+1:]
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			m = map[string]any{"raw": string(line)}
		}
		w.p.lines = append(w.p.lines, m)
	}
}

func (p *proc) stdoutText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func (p *proc) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logEvent waits for the first log line with the message msg.
func (p *proc) logEvent(msg string) map[string]any {
	p.t.Helper()
	var found map[string]any
	testkit.Eventually(p.t, 60*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lines {
			if l["msg"] == msg {
				found = l
				return true
			}
		}
		return p.exited()
	}, "log line "+msg)
	if found == nil {
		p.t.Fatalf("tms exited (%v) before logging %q; stderr: %s", p.err, msg, p.stderrText())
	}
	return found
}

// exit waits for the process to end and returns its exit code.
func (p *proc) exit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("tms did not exit within %s", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and expects a clean exit 0.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	if code := p.exit(30 * time.Second); code != 0 {
		p.t.Fatalf("exit code %d after SIGTERM, want 0; stderr: %s", code, p.stderrText())
	}
}

// api talks JSON to one listener.
type api struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newAPI(t *testing.T, addr string) *api {
	return &api{t: t, base: "http://" + addr, hc: &http.Client{Timeout: 10 * time.Second}}
}

// do sends body (nil: none) and decodes the answer into a map.
func (a *api) do(method, path, token string, body any) (int, map[string]any) {
	a.t.Helper()
	return a.doWith(method, path, token, nil, body)
}

// doWith is do with extra request headers.
func (a *api) doWith(method, path, token string, header map[string]string, body any) (int, map[string]any) {
	a.t.Helper()
	code, out, err := a.try(method, path, token, header, body)
	if err != nil {
		a.t.Fatal(err)
	}
	return code, out
}

// try is doWith for goroutines other than the test's, which must not
// fail the test themselves: a request that got no answer is an error.
func (a *api) try(method, path, token string, header map[string]string, body any) (int, map[string]any, error) {
	ans, err := send(a.hc, a.base, method, path, token, header, body)
	return ans.code, ans.body, err
}

// answer is one HTTP answer: its status, its JSON body decoded into a map
// (a body that is not JSON as {"raw": ...}), its Retry-After.
type answer struct {
	code       int
	body       map[string]any
	retryAfter string
}

func (a answer) String() string {
	return fmt.Sprintf("%d %v (Retry-After %q)", a.code, a.body, a.retryAfter)
}

// send is the one request helper of the binary's tests: body (nil: none)
// as JSON, an optional bearer token and extra headers; a request that got
// no answer is an error.
func send(hc *http.Client, base, method, path, token string, header map[string]string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return answer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	a := answer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if len(raw) > 0 && json.Unmarshal(raw, &a.body) != nil {
		a.body = map[string]any{"raw": string(raw)}
	}
	return a, nil
}

// must checks the status and returns the body.
func (a *api) must(want int, method, path, token string, body any) map[string]any {
	a.t.Helper()
	code, out := a.do(method, path, token, body)
	if code != want {
		a.t.Fatalf("%s %s = %d %v, want %d", method, path, code, out, want)
	}
	return out
}

func (a *api) waitReady(p *proc) {
	a.t.Helper()
	testkit.Eventually(a.t, 60*time.Second, func() bool {
		if p.exited() {
			return true
		}
		code, _ := a.do(http.MethodGet, "/readyz", "", nil)
		return code == http.StatusOK
	}, "GET /readyz 200")
	if p.exited() {
		a.t.Fatalf("tms exited (%v) before ready; stderr: %s", p.err, p.stderrText())
	}
}

func str(t *testing.T, m map[string]any, key string) string {
	t.Helper()
	s, ok := m[key].(string)
	if !ok || s == "" {
		t.Fatalf("field %s missing in %v", key, m)
	}
	return s
}

// serveArgs runs tms serve on random loopback ports with a private data
// dir and tenant databases under prefix.
func serveArgs(t *testing.T, prefix string) []string {
	return []string{"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", testkit.PostgresURL(),
		"--db-prefix", prefix, "--log-format", "json"}
}

// TestServeWalkthrough follows the README: account, login, agents,
// logout; a second process (tms ingress on the same NATS) sees the tenant
// and the logout; tms worker joins the responders and allocators, and a
// ticket made through the second process is admitted and written; SIGTERM
// stops all with exit 0.
func TestServeWalkthrough(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	listening := serve.logEvent("listening")
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub := newAPI(t, str(t, listening, "public"))
	internal := newAPI(t, str(t, listening, "internal"))
	pub.waitReady(serve)
	pub.must(http.StatusOK, http.MethodGet, "/healthz", "", nil)
	internal.must(http.StatusOK, http.MethodGet, "/healthz", "", nil)
	if code, _ := internal.do(http.MethodPost, "/create_account", "", map[string]any{}); code != http.StatusNotFound {
		t.Fatalf("internal listener serves /create_account: %d", code)
	}

	const password = "correct horse battery"
	acct := pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Acme Corp", "official_email": "ops@acme.example", "password": password,
	})
	clientID := str(t, acct, "client_id")
	if acct["status"] != "created" || acct["sub_domain"] != "acme-corp" {
		t.Fatalf("create_account: %v", acct)
	}
	pub.must(http.StatusConflict, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Acme again", "official_email": "OPS@acme.example", "password": password,
	})
	pub.must(http.StatusUnauthorized, http.MethodPost, "/login", "", map[string]any{"client_id": clientID, "password": "wrong password"})
	login := pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": clientID, "password": password})
	token := str(t, login, "token")
	str(t, login, "expires_at")

	agent := pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": clientID, "name": "Ada"})
	agentID := str(t, agent, "agent_id")
	if agent["agent_status"] != "available" || agent["name"] != "Ada" {
		t.Fatalf("POST /agents: %v", agent)
	}
	list := pub.must(http.StatusOK, http.MethodGet, "/agents", token, nil)
	if agents, _ := list["agents"].([]any); len(agents) != 1 || agents[0].(map[string]any)["agent_id"] != agentID {
		t.Fatalf("GET /agents: %v", list)
	}
	patched := pub.must(http.StatusOK, http.MethodPatch, "/agents/"+agentID, token, map[string]any{"agent_status": "unavailable"})
	if patched["agent_status"] != "unavailable" {
		t.Fatalf("PATCH: %v", patched)
	}

	// The tenant's own database exists on the server, named by the prefix.
	var dbs int
	if err := testkit.AdminConn(t).QueryRow(testkit.Context(t, 10*time.Second),
		`SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)`, prefix).Scan(&dbs); err != nil || dbs != 1 {
		t.Fatalf("tenant databases with prefix %s: %d, %v; want 1", prefix, dbs, err)
	}

	// A second process on the same NATS: the scaled-out shape.
	ingress := startTMS(t, []string{"TMS_NATS_URL=" + natsURL, "TMS_DATABASE_URL=" + testkit.PostgresURL()},
		"ingress", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--db-prefix", prefix, "--log-format", "json")
	pub2 := newAPI(t, str(t, ingress.logEvent("listening"), "public"))
	pub2.waitReady(ingress)
	token2 := str(t, pub2.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": clientID, "password": password}), "token")
	list = pub2.must(http.StatusOK, http.MethodGet, "/agents", token, nil)
	if agents, _ := list["agents"].([]any); len(agents) != 1 {
		t.Fatalf("GET /agents on the second process: %v", list)
	}

	worker := startTMS(t, []string{"TMS_NATS_URL=" + natsURL, "TMS_DATABASE_URL=" + testkit.PostgresURL()},
		"worker", "--log-format", "json")
	worker.logEvent("eta responder ready")

	out := pub.must(http.StatusOK, http.MethodPost, "/logout", token, map[string]any{"client_id": clientID})
	if out["status"] != "logged_out" {
		t.Fatalf("logout: %v", out)
	}
	pub.must(http.StatusUnauthorized, http.MethodGet, "/agents", token, nil)
	// docs/api.md: every ingress refuses a logged-out token within 1 s. The
	// bound here has slack for a loaded CI machine running -race.
	start := time.Now()
	testkit.Eventually(t, 3*time.Second, func() bool {
		code, _ := pub2.do(http.MethodGet, "/agents", token, nil)
		return code == http.StatusUnauthorized
	}, "the second process refusing the logged-out token")
	t.Logf("second process refused the token after %s", time.Since(start))
	// Other sessions of the tenant stay.
	pub2.must(http.StatusOK, http.MethodGet, "/agents", token2, nil)

	// Tickets through the second process, with three processes in the
	// responder and allocator groups: the agent is unavailable, so none
	// fits; once it is available again one does, and lands in the database.
	ticket := map[string]any{"client_id": clientID, "ticket_type": "GOLD"}
	pub2.must(http.StatusConflict, http.MethodPost, "/create_ticket", token2, ticket)
	pub2.must(http.StatusOK, http.MethodPatch, "/agents/"+agentID, token2, map[string]any{"agent_status": "available"})
	id := str(t, pub2.must(http.StatusCreated, http.MethodPost, "/create_ticket", token2, ticket), "ticket_id")
	waitAllocated(t, pub, token2, id)

	metrics := pub.must(http.StatusOK, http.MethodGet, "/metrics", "", nil)
	if !strings.Contains(fmt.Sprint(metrics["raw"]), "tms_http_requests_total") {
		t.Fatalf("/metrics lacks tms_http_requests_total")
	}

	worker.stop()
	ingress.stop()
	serve.stop()
}

// TestStartupFailuresNameTheFlag: each misconfiguration stops tms at once
// with one line on stderr naming the flag to change, and a non-zero exit.
func TestStartupFailuresNameTheFlag(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := func(t *testing.T, extra ...string) []string {
		return append([]string{"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
			"--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", testkit.PostgresURL(),
			"--db-prefix", "tmst_never_"}, extra...)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args func(t *testing.T) []string
		code int
		want string
	}{
		{"http port in use", nil, func(t *testing.T) []string { return base(t, "--http-addr", busy.Addr().String()) }, 1, "--http-addr"},
		{"internal port in use", nil, func(t *testing.T) []string { return base(t, "--internal-addr", busy.Addr().String()) }, 1, "--internal-addr"},
		{"nats port in use", nil, func(t *testing.T) []string { return base(t, "--nats-listen", busy.Addr().String()) }, 1, "--nats-listen"},
		{"postgres unreachable", nil, func(t *testing.T) []string {
			return base(t, "--database-url", "postgres://postgres:hunter2@127.0.0.1:1/postgres?sslmode=disable")
		}, 1, "--database-url"},
		{"data dir under a file", nil, func(t *testing.T) []string { return base(t, "--data-dir", filepath.Join(file, "var")) }, 1, "--data-dir"},
		{"unknown flag", nil, func(t *testing.T) []string { return base(t, "--bogus") }, 2, "-bogus"},
		{"bad env value", []string{"TMS_HOLD_TTL=soon"}, func(t *testing.T) []string { return base(t) }, 2, "TMS_HOLD_TTL"},
		{"ingress without nats url", nil, func(t *testing.T) []string { return []string{"ingress"} }, 2, "--nats-url"},
		{"no command", nil, func(t *testing.T) []string { return nil }, 2, "no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startTMS(t, tc.env, tc.args(t)...)
			if code := p.exit(60 * time.Second); code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, tc.code, p.stderrText())
			}
			lines := nonEmptyLines(p.stderrText())
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q: want one line naming %s", p.stderrText(), tc.want)
			}
			if strings.Contains(lines[0], "hunter2") {
				t.Fatalf("stderr shows a password: %q", lines[0])
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"-h"}, {"serve", "-h"}, {"help", "ingress"}} {
		p := startTMS(t, nil, args...)
		if code := p.exit(30 * time.Second); code != 0 || p.stderrText() != "" {
			t.Fatalf("tms %v: exit %d, stderr %q", args, code, p.stderrText())
		}
		if !strings.Contains(p.stdoutText(), "tms") {
			t.Fatalf("tms %v printed no help: %q", args, p.stdoutText())
		}
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}
