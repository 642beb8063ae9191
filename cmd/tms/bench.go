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
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	fs.BoolVar(&c.JSON, "json", false, "print one JSON object per rate on stdout and nothing else")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 256, "requests outstanding at once; a request due while this many are is not sent and counts as dropped")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per request; a request without an answer by then counts as an error")
	fs.BoolVar(&c.Cleanup, "cleanup", true, "at the end, cancel the tickets made, set the agents registered unavailable and log out")
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

Set-up: without --client-id, a new account (create_account, login) with
--agents agents; with --client-id and --password, that tenant, and agents
only if --agents is given. Clean-up (unless --cleanup=false): the tickets
it made are cancelled, the agents it registered set unavailable, its
session logged out. The API deletes no account: a tenant it opened is
left behind with its database (cancelled tickets, unavailable agents).

Results: a table on stdout (--json: one JSON object per rate, nothing
else), progress and set-up lines on stderr. accepted is 201, rejected 409
sla_unavailable, 4xx and 5xx the other answers, errors no answer (a
transport error or --timeout), dropped not sent; fail/s counts 4xx, 5xx,
errors and dropped. The latency percentiles are of the answered requests
(any status). The generator shares the machine with what it measures: on
one host, give it a core (GOMAXPROCS) or read the figures as a floor.

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
	raw, err := json.Marshal(body)
	if err != nil {
		return apiAnswer{}, err
	}
	for attempt := 1; ; attempt++ {
		a, err := b.call(ctx, method, path, raw)
		if err != nil {
			return a, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if a.status == want {
			return a, nil
		}
		err = fmt.Errorf("%s %s: %d %s %s (want %d)", method, path, a.status, a.body.Error, a.body.Message, want)
		if (a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable) || attempt == mustAttempts {
			return a, err
		}
		wait := a.retryAfter
		if wait <= 0 {
			wait = time.Second
		}
		if realWait(ctx, time.Now().Add(min(wait, 5*time.Second))) != nil {
			return a, fmt.Errorf("%w (given up: %v)", err, ctx.Err())
		}
	}
}

// benchTenant is the tenant a run loads and what it set up there.
type benchTenant struct {
	clientID string
	opened   bool     // tms bench opened the account
	agents   []string // agents it registered
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// setUp checks that tms answers at --url, opens an account or logs into
// the given one, and registers the agents.
func setUp(ctx context.Context, b *benchClient, cfg benchConfig, say func(string, ...any)) (*benchTenant, error) {
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
	t := &benchTenant{clientID: cfg.ClientID}
	password := cfg.Password
	if t.clientID == "" {
		if password == "" {
			password = randomHex(16)
		}
		tag := randomHex(4)
		a, err := b.must(ctx, http.StatusCreated, http.MethodPost, "/create_account", map[string]string{
			"client_name": "tms bench " + tag, "official_email": "bench-" + tag + "@bench.example", "password": password,
		})
		if err != nil {
			return nil, fmt.Errorf("opening the bench account: %w", err)
		}
		t.clientID, t.opened = a.body.ClientID, true
		say("opened account %s (tms bench %s)", t.clientID, tag)
	}
	a, err = b.must(ctx, http.StatusOK, http.MethodPost, "/login", map[string]string{"client_id": t.clientID, "password": password})
	if err != nil {
		return t, fmt.Errorf("logging in as %s: %w (check --client-id and --password)", t.clientID, err)
	}
	b.token = a.body.Token
	if cfg.Agents == 0 {
		return t, nil
	}
	ids, err := registerAgents(ctx, b, t.clientID, cfg.Agents)
	t.agents = ids
	if err != nil {
		return t, fmt.Errorf("registering agents (%d of %d done): %w", len(ids), cfg.Agents, err)
	}
	say("registered %d agents", len(ids))
	return t, nil
}

// registerAgents adds n agents to the tenant, a few at a time; it
// returns those registered, also on an error.
func registerAgents(ctx context.Context, b *benchClient, clientID string, n int) ([]string, error) {
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
				a, err := b.must(ctx, http.StatusCreated, http.MethodPost, "/agents",
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
			status, code, id, err := r.send(ctx)
			if err != nil {
				y.failed(err)
				return
			}
			y.answered(due, r.now(), status, code, id)
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
	tenant, err := setUp(ctx, b, cfg, say)
	if err != nil {
		if tenant != nil && cfg.Cleanup {
			cleanUp(bg, b, cfg, tenant, nil, say)
		}
		return err
	}
	body, err := json.Marshal(map[string]string{"client_id": tenant.clientID, "ticket_type": cfg.Type})
	if err != nil {
		return err
	}
	r := &runner{
		now: time.Now, waitUntil: realWait, maxInFlight: cfg.MaxInFlight,
		send: func(ctx context.Context) (int, string, string, error) {
			a, err := b.call(ctx, http.MethodPost, "/create_ticket", body)
			return a.status, a.body.Error, a.body.TicketID, err
		},
	}
	say("open loop against %s: %s tickets, tenant %s (%d agents registered by this run), %s per rate, at most %d in flight",
		cfg.URL, cfg.Type, tenant.clientID, len(tenant.agents), cfg.Duration, cfg.MaxInFlight)
	var made []string
	for k, rate := range cfg.Rates {
		if ctx.Err() != nil {
			break
		}
		n := scheduledCount(rate, cfg.Duration)
		y := newTally(n)
		stopProgress := progressLine(stderr, rate, n, y)
		ran := r.run(ctx, rate, n, y)
		stopProgress()
		res := y.result(rate, ran)
		res.TicketType, res.ClientID, res.Interrupted = cfg.Type, tenant.clientID, ctx.Err() != nil
		made = append(made, y.acceptedTickets()...)
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
		}
	}
	if !cfg.JSON {
		fmt.Fprintln(stdout, "latency: of the answered requests (any status), from each request's due time (open loop); fail/s: 4xx + 5xx + errors + dropped")
	}
	if ctx.Err() != nil {
		say("interrupted: %s", cleanupNote(cfg))
	}
	if cfg.Cleanup {
		cleanUp(bg, b, cfg, tenant, made, say)
	} else {
		say("no clean-up (--cleanup=false): %d tickets and %d agents left in tenant %s", len(made), len(tenant.agents), tenant.clientID)
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

// progressLine prints, every second until the returned stop is called,
// how far the rate is: requests done (answered, failed or dropped) of n,
// those answered and their p99 so far.
func progressLine(w io.Writer, rate float64, n int, y *tally) (stop func()) {
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
				d, answered, p99 := y.progress()
				fmt.Fprintf(w, "tms bench: %g/s %3ds: %d of %d done, %d answered, p99 %s\n",
					rate, int(time.Since(began).Round(time.Second).Seconds()), d, n, answered, p99.Round(10*time.Microsecond))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// cleanUp undoes what the run made, as far as the API allows: cancels the
// tickets, sets the agents unavailable and logs out. It reports what it
// did and what stays; a failure is reported, not returned (the results
// are already out). The whole of it is bounded by a deadline.
func cleanUp(ctx context.Context, b *benchClient, cfg benchConfig, t *benchTenant, tickets []string, say func(string, ...any)) {
	if b.token == "" {
		if t.opened {
			say("left behind: account %s and its database (not logged in, nothing else made)", t.clientID)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cancelled, cancelErr := parallel(ctx, tickets, func(id string) error {
		_, err := b.must(ctx, http.StatusOK, http.MethodPost, "/cancel_ticket", map[string]string{"ticket_id": id})
		return err
	})
	off, agentErr := parallel(ctx, t.agents, func(id string) error {
		_, err := b.must(ctx, http.StatusOK, http.MethodPatch, "/agents/"+id, map[string]string{"agent_status": "unavailable"})
		return err
	})
	_, logoutErr := b.must(ctx, http.StatusOK, http.MethodPost, "/logout", map[string]string{"client_id": t.clientID})
	say("clean-up: cancelled %d of %d tickets, set %d of %d agents unavailable, logged out: %v",
		cancelled, len(tickets), off, len(t.agents), logoutErr == nil)
	for _, err := range []error{cancelErr, agentErr, logoutErr} {
		if err != nil {
			say("clean-up incomplete: %v", err)
		}
	}
	if t.opened {
		say("left behind: account %s and its database with the cancelled tickets and unavailable agents (the API deletes no account; dropping the database removes its data)", t.clientID)
	} else if len(tickets) > 0 || len(t.agents) > 0 {
		say("left behind in %s: the cancelled tickets' rows and the unavailable agents", t.clientID)
	}
}

// parallel calls f on every item, 16 at a time, until ctx ends; it
// returns how many succeeded and the first error.
func parallel(ctx context.Context, items []string, f func(string) error) (int, error) {
	var (
		mu    sync.Mutex
		ok    int
		first error
		wg    sync.WaitGroup
	)
	next := make(chan string)
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
