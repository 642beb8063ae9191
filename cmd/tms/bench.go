package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// tms bench: an open-loop load generator of create_ticket against a
// running tms, through the public HTTP API as any client uses it.

// benchConfig is what tms bench reads from its flags and TMS_BENCH_*
// variables.
type benchConfig struct {
	URL         string
	Rates       []float64 // one rate, or the sweep
	Duration    time.Duration
	Type        string
	Agents      int
	ClientID    string
	Password    string
	JSON        bool
	MaxInFlight int
	Timeout     time.Duration
	Cleanup     bool
	// Tenants is how many accounts to open (each with Agents agents) and
	// spread the load over; SetupTimeout bounds the opening (0: none).
	Tenants      int
	SetupTimeout time.Duration
	// MetricsURL is a Prometheus endpoint to read the server's RSS and
	// goroutines from after the set-up and after each rate ("": off).
	MetricsURL string
}

// benchEnvName is the variable of a bench flag: max-in-flight ->
// TMS_BENCH_MAX_IN_FLIGHT. bench's flags have their own prefix so that a
// TMS_MAX_IN_FLIGHT set for tms serve in the same shell is not read as
// the generator's.
func benchEnvName(flagName string) string {
	return "TMS_BENCH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

const (
	defaultBenchURL    = "http://127.0.0.1:8080"
	defaultBenchAgents = 1000
)

// benchFlags binds the flags of tms bench to c; rate and sweep are parsed
// after, since they decide together what runs.
func benchFlags(c *benchConfig, rate *float64, sweep *string) *flag.FlagSet {
	fs := flag.NewFlagSet("tms bench", flag.ContinueOnError)
	fs.StringVar(&c.URL, "url", defaultBenchURL, "public base URL of the tms to load (serve or ingress)")
	fs.Float64Var(rate, "rate", 100, "create_ticket requests a second, sent on schedule (open loop); --sweep replaces it")
	fs.StringVar(sweep, "sweep", "", "comma-separated rates run one after another, each for --duration, e.g. 500,1000,2000")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long each rate runs")
	fs.StringVar(&c.Type, "type", "BRONZE", "ticket type: GOLD, SILVER or BRONZE")
	fs.IntVar(&c.Agents, "agents", defaultBenchAgents, "agents to register before the run (with --client-id: none unless given)")
	fs.StringVar(&c.ClientID, "client-id", "", "load an existing tenant (with --password) instead of opening a new account")
	fs.StringVar(&c.Password, "password", "", "password of --client-id; without --client-id, the new account's (default: a random one)")
	fs.BoolVar(&c.JSON, "json", false, "print JSON on stdout and nothing else: the set-up's object (\"phase\":\"accounts\"), then one object per rate")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 256, "requests outstanding at once; a request due while this many are is not sent and counts as dropped")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per request; a request without an answer by then counts as an error")
	fs.BoolVar(&c.Cleanup, "cleanup", true, "at the end, cancel the tickets made, set the agents registered unavailable and log out (every tenant)")
	fs.IntVar(&c.Tenants, "tenants", 1, "accounts to open one after another (create_account, login, --agents agents each); the load goes to them round-robin (not with --client-id)")
	fs.DurationVar(&c.SetupTimeout, "setup-timeout", 0, "stop opening accounts after this long and load those opened (at least one); 0: open all --tenants")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "Prometheus endpoint of the server, e.g. http://127.0.0.1:8080/metrics: its RSS and goroutines are read after the set-up and after each rate (empty: off)")
	return fs
}

// loadBenchConfig parses tms bench's arguments (after "bench") and
// variables. Help goes to out and is errHelp; a bad value is a
// usageError naming the flag.
func loadBenchConfig(args []string, getenv func(string) string, out io.Writer) (benchConfig, error) {
	var c benchConfig
	var rate float64
	var sweep string
	fs := benchFlags(&c, &rate, &sweep)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(getenv, benchEnvName(f.Name))
		if !ok || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("%s=%q: invalid value for --%s: %v", benchEnvName(f.Name), v, f.Name, err)
		}
	})
	if envErr != nil {
		return c, envErr
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printBenchUsage(out)
			return c, errHelp
		}
		return c, usagef("tms bench: %v (see tms help bench)", err)
	}
	if fs.NArg() > 0 {
		return c, usagef("tms bench: unexpected argument %q (see tms help bench)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// --rate and --sweep replace each other: the one on the command line
	// wins over the other's variable.
	onCmd := map[string]bool{}
	probe := benchFlags(&benchConfig{}, new(float64), new(string))
	probe.SetOutput(io.Discard)
	if probe.Parse(args) == nil {
		probe.Visit(func(f *flag.Flag) { onCmd[f.Name] = true })
	}
	switch {
	case onCmd["rate"] && !onCmd["sweep"]:
		delete(set, "sweep")
	case onCmd["sweep"] && !onCmd["rate"]:
		delete(set, "rate")
	}
	return c, c.finish(rate, sweep, set)
}

// finish checks the values and settles the rates and the agents; set
// holds the flags given on the command line or by a variable.
func (c *benchConfig) finish(rate float64, sweep string, set map[string]bool) error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return usagef("--url %q: want the base URL of tms's public listener, http://host:port (%s)", c.URL, benchHint("url"))
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	switch {
	case set["rate"] && set["sweep"]:
		return usagef("--rate and --sweep: give one of them (a sweep is several rates)")
	case set["sweep"]:
		for _, f := range strings.Split(sweep, ",") {
			r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || !(r > 0) || r > 1e6 {
				return usagef("--sweep %q: want comma-separated rates above 0 and at most 1000000, e.g. 500,1000,2000", sweep)
			}
			c.Rates = append(c.Rates, r)
		}
	default:
		if !(rate > 0) || rate > 1e6 {
			return usagef("--rate %g: want requests a second above 0 and at most 1000000", rate)
		}
		c.Rates = []float64{rate}
	}
	if c.Duration < 100*time.Millisecond {
		return usagef("--duration %s: want at least 100ms", c.Duration)
	}
	for _, r := range c.Rates {
		if scheduledCount(r, c.Duration) < 1 {
			return usagef("--duration %s at %g/s schedules no request: want rate x duration of at least 1", c.Duration, r)
		}
		if scheduledCount(r, c.Duration) > 10_000_000 {
			return usagef("--duration %s at %g/s schedules over 10 million requests: shorten --duration", c.Duration, r)
		}
	}
	switch c.Type {
	case "GOLD", "SILVER", "BRONZE":
	default:
		return usagef("--type %q: want GOLD, SILVER or BRONZE", c.Type)
	}
	if c.Agents < 0 || c.Agents > 100_000 {
		return usagef("--agents %d: want 0..100000", c.Agents)
	}
	if c.ClientID != "" {
		if c.Password == "" {
			return usagef("--client-id %s needs its --password (%s)", c.ClientID, benchHint("password"))
		}
		if !set["agents"] {
			c.Agents = 0
		}
	}
	if c.Tenants < 1 || c.Tenants > 100_000 {
		return usagef("--tenants %d: want 1..100000", c.Tenants)
	}
	if c.ClientID != "" && c.Tenants != 1 {
		return usagef("--tenants %d with --client-id: a given tenant is one; drop --client-id to open %d accounts", c.Tenants, c.Tenants)
	}
	if c.SetupTimeout < 0 {
		return usagef("--setup-timeout %s: want 0 (no bound) or more", c.SetupTimeout)
	}
	if c.MetricsURL != "" {
		u, err := url.Parse(c.MetricsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--metrics-url %q: want the URL of a Prometheus endpoint, http://host:port/metrics (%s)", c.MetricsURL, benchHint("metrics-url"))
		}
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 100_000 {
		return usagef("--max-in-flight %d: want 1..100000", c.MaxInFlight)
	}
	if c.Timeout < time.Millisecond {
		return usagef("--timeout %s: want at least 1ms", c.Timeout)
	}
	return nil
}

// benchHint tells how to set a bench flag.
func benchHint(flagName string) string {
	return fmt.Sprintf("set --%s or %s", flagName, benchEnvName(flagName))
}

// printBenchUsage is tms bench's help: what it does, then its flags.
func printBenchUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: tms bench [flags]

An open-loop load generator of POST /create_ticket against a running tms,
through its public HTTP API as any client uses it. Request i of a rate is
due at start + i/rate, whatever happened to the requests before it; its
latency is counted from that due time, not from when it left, so a server
that stalls is charged for every request it held up (no coordinated
omission). A request due while --max-in-flight are outstanding is not sent
and counts as dropped, never delayed. Each rate runs for --duration
(rate x duration requests) and stops by itself, at the latest --timeout
after its last request; SIGINT or SIGTERM stops it early, prints what was
measured and cleans up (a second signal quits at once).

Set-up: without --client-id, --tenants new accounts (1 by default), one
after another, each create_account then login then --agents agents; the
load goes to them round-robin, each request with its tenant's token. Each
account creates a database: 1000 take minutes, and tms serve lets one
address open 300 at once and 1 a second after that unless it runs with
--client-rate 0 (TMS_CLIENT_RATE=0). --setup-timeout stops the opening
early and loads the accounts opened. With --client-id and --password,
that tenant (--tenants 1 only), and agents only if --agents is given.
Clean-up (unless --cleanup=false), in every tenant: the tickets it made
are cancelled, the agents it registered set unavailable, its session
logged out. The API deletes no account: a tenant it opened is left
behind with its database (cancelled tickets, unavailable agents).

Results: the set-up (create_account and login latency p50, p90, p99,
max) and a table on stdout (--json: first an object with
"phase":"accounts", then one object per rate, nothing else), progress and
set-up lines on stderr. accepted is 201, rejected 409 sla_unavailable,
4xx and 5xx the other answers, errors no answer (a transport error or
--timeout), dropped not sent; fail/s counts 4xx, 5xx, errors and dropped.
The latency percentiles are of the answered requests (any status).
--metrics-url adds the server's RSS (process_resident_memory_bytes) and
goroutines (go_goroutines) after the set-up and after each rate; tms
serves /metrics on its public listener. The generator shares the machine
with what it measures: on one host, give it a core (GOMAXPROCS) or read
the figures as a floor.

Exit codes: 0 when it ran (also when interrupted), 1 when the set-up fails
(nothing answers at --url, the login is refused), 2 for a bad flag.

Flags (each also TMS_BENCH_<NAME>; the command line wins):
`)
	var c benchConfig
	var rate float64
	var sweep string
	benchFlags(&c, &rate, &sweep).VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s (%s, default %s)\n      %s\n", f.Name, benchEnvName(f.Name), def, f.Usage)
	})
}

// benchMain runs tms bench and returns its exit code.
func benchMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := loadBenchConfig(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tms: "+oneLine(err))
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	if err := runBench(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "tms bench: "+oneLine(err))
		return 1
	}
	return 0
}

// benchClient is the HTTP side of tms bench.
type benchClient struct {
	base    string
	hc      *http.Client
	timeout time.Duration
	token   string
}

// newBenchClient tunes the transport so that the generator is not what
// limits the rate: keep-alive connections, as many idle ones kept as may
// be in flight, and at most that many (plus a few for the set-up and the
// clean-up) open at once, so a stalled server cannot make it open
// connections without bound. No proxy: the load goes where --url says.
func newBenchClient(cfg benchConfig) *benchClient {
	conns := cfg.MaxInFlight + 16
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableCompression:    true,
	}
	return &benchClient{base: cfg.URL, hc: &http.Client{Transport: tr}, timeout: cfg.Timeout}
}

// apiAnswer is an answer of the API: its status and the fields tms bench
// reads.
type apiAnswer struct {
	status     int
	retryAfter time.Duration // Retry-After, 0 when absent
	body       struct {
		Status   string `json:"status"`
		Error    string `json:"error"`
		Message  string `json:"message"`
		ClientID string `json:"client_id"`
		Token    string `json:"token"`
		AgentID  string `json:"agent_id"`
		TicketID string `json:"ticket_id"`
	}
}

// call sends one request with the client's token (if any) and reads the
// answer; the body is read to its end so the connection is reused. An
// error means no answer.
func (b *benchClient) call(ctx context.Context, method, path string, body []byte) (apiAnswer, error) {
	var a apiAnswer
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, rd)
	if err != nil {
		return a, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return a, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	a.status = resp.StatusCode
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		a.retryAfter = time.Duration(secs) * time.Second
	}
	_ = json.Unmarshal(raw, &a.body) // a body that is not JSON leaves the fields empty
	return a, nil
}

// mustAttempts bounds how often must sends one request.
const mustAttempts = 10

// must sends a set-up or clean-up request and wants the status want. A
// 429 or 503 (the server shed it: nothing was done) is tried again after
// its Retry-After (1s when absent, at most 5s), up to mustAttempts times
// in all: under load, or beside other tenants over their fair share, a
// clean-up must not give up on its first refusal.
func (b *benchClient) must(ctx context.Context, want int, method, path string, body any) (apiAnswer, error) {
	a, _, err := b.mustTimed(ctx, want, method, path, body)
	return a, err
}

// mustTry is what must's attempts came to: the latency of the last one
// (the answer taken) and the shed answers tried again before it.
type mustTry struct {
	took time.Duration
	shed []apiAnswer
}

// mustTimed is must, also telling how long the answer taken took and
// which shed answers came before it.
func (b *benchClient) mustTimed(ctx context.Context, want int, method, path string, body any) (apiAnswer, mustTry, error) {
	var try mustTry
	raw, err := json.Marshal(body)
	if err != nil {
		return apiAnswer{}, try, err
	}
	for attempt := 1; ; attempt++ {
		began := time.Now()
		a, err := b.call(ctx, method, path, raw)
		try.took = time.Since(began)
		if err != nil {
			return a, try, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if a.status == want {
			return a, try, nil
		}
		err = fmt.Errorf("%s %s: %d %s %s (want %d)", method, path, a.status, a.body.Error, a.body.Message, want)
		if (a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable) || attempt == mustAttempts {
			return a, try, err
		}
		try.shed = append(try.shed, a)
		wait := a.retryAfter
		if wait <= 0 {
			wait = time.Second
		}
		if realWait(ctx, time.Now().Add(min(wait, 5*time.Second))) != nil {
			return a, try, fmt.Errorf("%w (given up: %v)", err, ctx.Err())
		}
	}
}

// benchTenant is a tenant a run loads and what it set up and made there.
type benchTenant struct {
	clientID string
	opened   bool         // tms bench opened the account
	api      *benchClient // with the tenant's token once logged in
	agents   []string     // agents it registered
	body     []byte       // its create_ticket request

	mu      sync.Mutex
	tickets []string // accepted, for the clean-up
}

// addTicket notes a ticket the load made in the tenant.
func (t *benchTenant) addTicket(id string) {
	t.mu.Lock()
	t.tickets = append(t.tickets, id)
	t.mu.Unlock()
}

// madeTickets is the tickets the load made in the tenant.
func (t *benchTenant) madeTickets() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.tickets)
}

// asTenant is b with a token of its own; the transport is shared.
func (b *benchClient) asTenant(token string) *benchClient {
	c := *b
	c.token = token
	return &c
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// benchSetup is what the set-up made: the tenants (those logged in
// first; a last one may have failed its login or its agents) and the
// figures of the accounts object.
type benchSetup struct {
	tenants []*benchTenant
	res     accountsResult
	// createLat and loginLat are the latencies of the answers taken.
	createLat, loginLat []time.Duration
	opened              atomic.Int64 // accounts ready, for the progress line
}

// loaded is the tenants logged in, which the load goes to.
func (s *benchSetup) loaded() []*benchTenant {
	var out []*benchTenant
	for _, t := range s.tenants {
		if t.api.token != "" {
			out = append(out, t)
		}
	}
	return out
}

// setUp checks that tms answers at --url, then opens --tenants accounts
// one after another (or logs into the given one), each with its agents.
// A signal (the end of ctx) stops it after the account being opened,
// which is still logged in so that the clean-up can reach it; it is then
// Interrupted, not an error. --setup-timeout stops it the same way, once
// at least one account is open, and the load goes on (TimedOut). The
// setup returned holds every tenant opened, also on an error.
func setUp(ctx context.Context, b *benchClient, cfg benchConfig, say func(string, ...any)) (*benchSetup, error) {
	s := &benchSetup{res: accountsResult{Phase: "accounts", Tenants: cfg.Tenants, AgentsPerTenant: cfg.Agents}}
	a, err := b.call(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return nil, fmt.Errorf("nothing answers at %s (GET /readyz: %v): start tms serve there, or %s", cfg.URL, err, benchHint("url"))
	}
	switch {
	case a.status == http.StatusOK && a.body.Status == "degraded":
		say("tms at %s is degraded (%s): admission goes on, the allocators wait", cfg.URL, a.body.Message)
	case a.status != http.StatusOK:
		return nil, fmt.Errorf("tms at %s is not ready: GET /readyz %d %s %s", cfg.URL, a.status, a.body.Error, a.body.Message)
	}
	began := time.Now()
	defer func() {
		s.res.DurationS = math.Round(time.Since(began).Seconds()*1e3) / 1e3
		s.res.CreateAccountMS, s.res.LoginMS = summarizeSetup(s.createLat), summarizeSetup(s.loginLat)
		for _, t := range s.tenants {
			s.res.ClientIDs = append(s.res.ClientIDs, t.clientID)
			s.res.Agents += len(t.agents)
			if t.opened {
				s.res.Opened++
			}
		}
	}()
	if cfg.Tenants > 1 {
		defer everySecond(func(elapsed time.Duration) {
			say("accounts %3ds: %d of %d opened", int(elapsed.Round(time.Second).Seconds()), s.opened.Load(), cfg.Tenants)
		})()
	}
	// An account under way is finished after a signal (each request is
	// bounded by --timeout and mustAttempts), so that it can be cleaned
	// up; the agents stop at the signal.
	bg := context.WithoutCancel(ctx)
	shedSaid := false
	noteShed := func(op string, try mustTry) {
		s.res.Retried += len(try.shed)
		if len(try.shed) > 0 && !shedSaid {
			shedSaid = true
			a := try.shed[0]
			hint := ""
			if op == "create_account" && a.status == http.StatusTooManyRequests {
				hint = ": tms limits the accounts one address opens (--client-rate, by default 1 a second after a burst of 300); start it with --client-rate 0 to open many quickly"
			}
			say("%s shed with %d %s %s, tried again after its Retry-After (said once)%s", op, a.status, a.body.Error, a.body.Message, hint)
		}
	}
	password := cfg.Password
	if cfg.ClientID == "" && password == "" {
		password = randomHex(16)
	}
	tag := randomHex(4)
	deadline := time.Time{}
	if cfg.SetupTimeout > 0 {
		deadline = began.Add(cfg.SetupTimeout)
	}
	for i := range cfg.Tenants {
		if ctx.Err() != nil {
			s.res.Interrupted = true
			break
		}
		if i > 0 && !deadline.IsZero() && !time.Now().Before(deadline) {
			s.res.TimedOut = true
			say("--setup-timeout %s passed: going on with %d of %d accounts", cfg.SetupTimeout, i, cfg.Tenants)
			break
		}
		t := &benchTenant{clientID: cfg.ClientID, api: b.asTenant("")}
		if t.clientID == "" {
			name := "tms bench " + tag
			email := "bench-" + tag + "@bench.example"
			if cfg.Tenants > 1 {
				name = fmt.Sprintf("tms bench %s-%d", tag, i+1)
				email = fmt.Sprintf("bench-%s-%d@bench.example", tag, i+1)
			}
			a, try, err := b.mustTimed(bg, http.StatusCreated, http.MethodPost, "/create_account", map[string]string{
				"client_name": name, "official_email": email, "password": password,
			})
			noteShed("create_account", try)
			if err != nil {
				return s, fmt.Errorf("opening bench account %d of %d: %w", i+1, cfg.Tenants, err)
			}
			s.createLat = append(s.createLat, try.took)
			t.clientID, t.opened = a.body.ClientID, true
			s.tenants = append(s.tenants, t)
			if cfg.Tenants == 1 {
				say("opened account %s (%s)", t.clientID, name)
			}
		} else {
			s.tenants = append(s.tenants, t)
		}
		a, try, err := b.mustTimed(bg, http.StatusOK, http.MethodPost, "/login", map[string]string{"client_id": t.clientID, "password": password})
		noteShed("login", try)
		if err != nil {
			return s, fmt.Errorf("logging in as %s: %w (check --client-id and --password)", t.clientID, err)
		}
		s.loginLat = append(s.loginLat, try.took)
		t.api = b.asTenant(a.body.Token)
		t.body, err = json.Marshal(map[string]string{"client_id": t.clientID, "ticket_type": cfg.Type})
		if err != nil {
			return s, err
		}
		if cfg.Agents > 0 {
			ids, err := registerAgents(ctx, t.api, t.clientID, cfg.Agents)
			t.agents = ids
			if err != nil && ctx.Err() != nil {
				s.res.Interrupted = true
				break
			}
			if err != nil {
				return s, fmt.Errorf("registering agents in %s (%d of %d done): %w", t.clientID, len(ids), cfg.Agents, err)
			}
			if cfg.Tenants == 1 {
				say("registered %d agents", len(ids))
			}
		}
		s.opened.Add(1)
	}
	if cfg.Tenants > 1 {
		say("opened %d of %d accounts (tms bench %s-1...), registered %d agents in each", len(s.tenants), cfg.Tenants, tag, cfg.Agents)
	}
	return s, nil
}

// registerAgents adds n agents to the tenant, a few at a time; it
// returns those registered, also on an error. An interruption (ctx done)
// stops sending new requests but lets those in flight finish, as the
// account creates do: an agent the server made for a request cut off
// would be unknown to the clean-up, left available.
func registerAgents(ctx context.Context, b *benchClient, clientID string, n int) ([]string, error) {
	bg := context.WithoutCancel(ctx)
	var (
		mu    sync.Mutex
		ids   []string
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				a, err := b.must(bg, http.StatusCreated, http.MethodPost, "/agents",
					map[string]string{"client_id": clientID, "name": fmt.Sprintf("bench agent %d", i+1)})
				mu.Lock()
				if err != nil && first == nil {
					first = err
				} else if err == nil {
					ids = append(ids, a.body.AgentID)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return ids, first
}

// scrape reads the server's RSS and goroutines from --metrics-url; what
// goes wrong is in the result's Error.
func (b *benchClient) scrape(ctx context.Context, metricsURL string) *serverMetrics {
	m, err := func() (serverMetrics, error) {
		ctx, cancel := context.WithTimeout(ctx, b.timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
		if err != nil {
			return serverMetrics{}, err
		}
		// The text format: a Prometheus client asked for protobuf would
		// answer in it.
		req.Header.Set("Accept", "text/plain;version=0.0.4")
		resp, err := b.hc.Do(req)
		if err != nil {
			return serverMetrics{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			return serverMetrics{}, fmt.Errorf("status %d", resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "text/plain") && !strings.HasPrefix(ct, "application/openmetrics-text") {
			return serverMetrics{}, fmt.Errorf("Content-Type %q is not the text exposition format", ct)
		}
		m, err := parseServerMetrics(io.LimitReader(resp.Body, 64<<20))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
		return m, err
	}()
	if err != nil {
		m.Error = fmt.Sprintf("GET %s: %v", metricsURL, err)
	}
	return &m
}

// runner runs one rate's open loop. now and waitUntil are the clock
// (injected by the tests); send makes one request and reports its answer.
type runner struct {
	now         func() time.Time
	waitUntil   func(ctx context.Context, t time.Time) error
	send        func(ctx context.Context) (status int, code, ticketID string, err error)
	maxInFlight int
}

// realWait waits on the wall clock until t or the end of ctx.
func realWait(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run sends n requests at rate, request i at start + i/rate, into y. It
// stops scheduling when ctx ends (the requests in flight are then
// cancelled and count as errors), and returns once every request sent has
// its outcome, with how long the schedule ran.
func (r *runner) run(ctx context.Context, rate float64, n int, y *tally) time.Duration {
	slots := make(chan struct{}, r.maxInFlight)
	var wg sync.WaitGroup
	start := r.now()
	i := 0
	for ; i < n; i++ {
		due := dueTime(start, i, rate)
		if r.waitUntil(ctx, due) != nil {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			y.dropped()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			status, code, _, err := r.send(ctx)
			if err != nil {
				y.failed(err)
				return
			}
			y.answered(due, r.now(), status, code)
		}()
	}
	ran := time.Duration(float64(n) / rate * float64(time.Second))
	if i < n {
		ran = r.now().Sub(start)
	}
	wg.Wait()
	return ran
}

// runBench sets up, runs every rate, prints the results and cleans up.
func runBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(stderr, "tms bench: "+format+"\n", args...) }
	b := newBenchClient(cfg)
	defer b.hc.CloseIdleConnections()
	// The set-up and the clean-up run to their end after a first signal
	// (each request is bounded by --timeout); a second one quits.
	bg := context.WithoutCancel(ctx)
	setup, err := setUp(ctx, b, cfg, say)
	if err != nil {
		if setup != nil && cfg.Cleanup {
			cleanUp(bg, setup.tenants, say)
		}
		return err
	}
	tenants := setup.loaded()
	if cfg.MetricsURL != "" {
		setup.res.Server = b.scrape(bg, cfg.MetricsURL)
		if setup.res.Server.Error != "" {
			say("--metrics-url: %s", setup.res.Server.Error)
		}
	}
	if cfg.JSON {
		line, err := json.Marshal(setup.res)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(line))
	} else {
		for _, l := range setup.res.textLines() {
			fmt.Fprintln(stdout, l)
		}
	}
	var next atomic.Uint64
	r := &runner{
		now: time.Now, waitUntil: realWait, maxInFlight: cfg.MaxInFlight,
		send: func(ctx context.Context) (int, string, string, error) {
			t := tenants[(next.Add(1)-1)%uint64(len(tenants))]
			a, err := t.api.call(ctx, http.MethodPost, "/create_ticket", t.body)
			if err == nil && a.status == http.StatusCreated && a.body.TicketID != "" {
				t.addTicket(a.body.TicketID)
			}
			return a.status, a.body.Error, a.body.TicketID, err
		},
	}
	switch n := len(tenants); {
	case setup.res.Interrupted: // no rate runs
	case n == 1:
		say("open loop against %s: %s tickets, tenant %s (%d agents registered by this run), %s per rate, at most %d in flight",
			cfg.URL, cfg.Type, tenants[0].clientID, len(tenants[0].agents), cfg.Duration, cfg.MaxInFlight)
	case n > 1:
		say("open loop against %s: %s tickets, round-robin over %d tenants (%d agents registered in each), %s per rate, at most %d in flight",
			cfg.URL, cfg.Type, n, cfg.Agents, cfg.Duration, cfg.MaxInFlight)
	}
	for k, rate := range cfg.Rates {
		if ctx.Err() != nil || setup.res.Interrupted || len(tenants) == 0 {
			break
		}
		n := scheduledCount(rate, cfg.Duration)
		y := newTally(n)
		stopProgress := progressLine(stderr, rate, n, y)
		ran := r.run(ctx, rate, n, y)
		stopProgress()
		res := y.result(rate, ran)
		res.TicketType, res.ClientID, res.Interrupted = cfg.Type, tenants[0].clientID, ctx.Err() != nil
		if len(tenants) > 1 {
			res.Tenants = len(tenants)
		}
		if cfg.MetricsURL != "" {
			res.Server = b.scrape(bg, cfg.MetricsURL)
		}
		if cfg.JSON {
			line, err := json.Marshal(res)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(line))
		} else {
			if k == 0 {
				fmt.Fprintln(stdout, textHeader)
			}
			fmt.Fprintln(stdout, res.textRow())
			if extra := res.answersLine(); extra != "" {
				fmt.Fprintln(stdout, extra)
			}
			if res.Server != nil {
				fmt.Fprintf(stdout, "  after %g/s: server %s\n", rate, res.Server.text())
			}
		}
	}
	if !cfg.JSON && !setup.res.Interrupted {
		fmt.Fprintln(stdout, "latency: of the answered requests (any status), from each request's due time (open loop); fail/s: 4xx + 5xx + errors + dropped")
	}
	if ctx.Err() != nil {
		say("interrupted: %s", cleanupNote(cfg))
	}
	if cfg.Cleanup {
		cleanUp(bg, setup.tenants, say)
	} else {
		made, agents := 0, 0
		for _, t := range setup.tenants {
			made += len(t.madeTickets())
			agents += len(t.agents)
		}
		if len(setup.tenants) == 1 {
			say("no clean-up (--cleanup=false): %d tickets and %d agents left in tenant %s", made, agents, setup.tenants[0].clientID)
		} else {
			say("no clean-up (--cleanup=false): %d tickets and %d agents left in %d tenants", made, agents, len(setup.tenants))
		}
	}
	return nil
}

// cleanupNote says what follows an interruption.
func cleanupNote(cfg benchConfig) string {
	if cfg.Cleanup {
		return "cleaning up (a second signal quits at once, leaving the tickets)"
	}
	return "stopping"
}

// everySecond calls f with the time since it began once a second until
// the returned stop is called.
func everySecond(f func(elapsed time.Duration)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		began := time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f(time.Since(began))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine prints, every second until the returned stop is called,
// how far the rate is: requests done (answered, failed or dropped) of n,
// those answered and their p99 so far.
func progressLine(w io.Writer, rate float64, n int, y *tally) (stop func()) {
	return everySecond(func(elapsed time.Duration) {
		d, answered, p99 := y.progress()
		fmt.Fprintf(w, "tms bench: %g/s %3ds: %d of %d done, %d answered, p99 %s\n",
			rate, int(elapsed.Round(time.Second).Seconds()), d, n, answered, p99.Round(10*time.Microsecond))
	})
}

// cleanUp undoes what the run made in every tenant, as far as the API
// allows: cancels the tickets, sets the agents unavailable and logs out
// (after the rest). It reports what it did and what stays; a failure is
// reported, not returned (the results are already out). The whole of it
// is bounded by a deadline: 2 minutes, and 100 ms more for every tenant.
func cleanUp(ctx context.Context, tenants []*benchTenant, say func(string, ...any)) {
	var in, notIn []*benchTenant
	for _, t := range tenants {
		if t.api.token != "" {
			in = append(in, t)
		} else if t.opened {
			notIn = append(notIn, t)
		}
	}
	for _, t := range notIn {
		say("left behind: account %s and its database (not logged in, nothing else made)", t.clientID)
	}
	if len(in) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(len(in))*100*time.Millisecond)
	defer cancel()
	type job struct {
		t  *benchTenant
		id string
	}
	var tickets, agents []job
	for _, t := range in {
		for _, id := range t.madeTickets() {
			tickets = append(tickets, job{t, id})
		}
		for _, id := range t.agents {
			agents = append(agents, job{t, id})
		}
	}
	cancelled, cancelErr := parallel(ctx, tickets, func(j job) error {
		_, err := j.t.api.must(ctx, http.StatusOK, http.MethodPost, "/cancel_ticket", map[string]string{"ticket_id": j.id})
		return err
	})
	off, agentErr := parallel(ctx, agents, func(j job) error {
		_, err := j.t.api.must(ctx, http.StatusOK, http.MethodPatch, "/agents/"+j.id, map[string]string{"agent_status": "unavailable"})
		return err
	})
	out, logoutErr := parallel(ctx, in, func(t *benchTenant) error {
		_, err := t.api.must(ctx, http.StatusOK, http.MethodPost, "/logout", map[string]string{"client_id": t.clientID})
		return err
	})
	of := ""
	if len(in) > 1 {
		of = fmt.Sprintf(" (%d of %d tenants)", out, len(in))
	}
	say("clean-up: cancelled %d of %d tickets, set %d of %d agents unavailable, logged out: %v%s",
		cancelled, len(tickets), off, len(agents), out == len(in), of)
	for _, err := range []error{cancelErr, agentErr, logoutErr} {
		if err != nil {
			say("clean-up incomplete: %v", err)
		}
	}
	var opened []string
	for _, t := range in {
		if t.opened {
			opened = append(opened, t.clientID)
		}
	}
	switch {
	case len(opened) == 1:
		say("left behind: account %s and its database with the cancelled tickets and unavailable agents (the API deletes no account; dropping the database removes its data)", opened[0])
	case len(opened) > 1:
		say("left behind: %d accounts (%s ... %s) and their databases with the cancelled tickets and unavailable agents (the API deletes no account; dropping the databases removes their data)",
			len(opened), opened[0], opened[len(opened)-1])
	case len(tickets) > 0 || len(agents) > 0:
		say("left behind in %s: the cancelled tickets' rows and the unavailable agents", in[0].clientID)
	}
}

// parallel calls f on every item, 16 at a time, until ctx ends; it
// returns how many succeeded and the first error.
func parallel[T any](ctx context.Context, items []T, f func(T) error) (int, error) {
	var (
		mu    sync.Mutex
		ok    int
		first error
		wg    sync.WaitGroup
	)
	next := make(chan T)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range next {
				err := f(it)
				mu.Lock()
				if err == nil {
					ok++
				} else if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, it := range items {
		select {
		case next <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil && ok < len(items) {
		first = ctx.Err()
	}
	return ok, first
}
