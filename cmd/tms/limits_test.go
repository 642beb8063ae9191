package main_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/ops/testkit"
)

// The tests of this file run tms serve with its default limits (only
// addresses, data dir, database and, for the load tests, the log level
// are set) and check that the ordinary use of one client is served.

// client is an HTTP client whose connections come from one loopback
// address (127.0.0.2, 127.0.0.3 ...: on Linux all of 127/8 is the
// loopback), so that a test can be several client addresses. Its calls
// return errors rather than failing the test, for use from goroutines.
type client struct {
	base string
	hc   *http.Client
}

func newClient(serverAddr, fromIP string, conns int) *client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 30 * time.Second}
	return &client{base: "http://" + serverAddr, hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

func (c *client) call(method, path, token string, body any) (answer, error) {
	return send(c.hc, c.base, method, path, token, nil, body)
}

// mustCall is call from the test goroutine: an error fails the test.
func (c *client) mustCall(t *testing.T, want int, method, path, token string, body any) answer {
	t.Helper()
	a, err := c.call(method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if a.code != want {
		t.Fatalf("%s %s: %s, want %d", method, path, a, want)
	}
	return a
}

// startDefaultServe starts tms serve with the default limits and returns
// it and its public address.
func startDefaultServe(t *testing.T, extra ...string) (*proc, string) {
	t.Helper()
	p := startTMS(t, nil, append(serveArgs(t, testkit.DatabasePrefix(t)), extra...)...)
	addr := str(t, p.logEvent("listening"), "public")
	newAPI(t, addr).waitReady(p)
	return p, addr
}

// honourRetryAfter waits the Retry-After the server answered, as a
// well-behaved client does before its next try.
func (a answer) honourRetryAfter(t *testing.T) {
	t.Helper()
	secs, err := strconv.Atoi(a.retryAfter)
	if err != nil || secs < 0 {
		t.Fatalf("Retry-After %q is not a number of seconds", a.retryAfter)
	}
	waitUntil(time.Now().Add(time.Duration(secs) * time.Second))
}

// waitUntil blocks until the instant at, on a timer: the instant a
// protocol or a load schedule sets (a Retry-After, an open-loop send
// time), never a guess at when something else has happened.
func waitUntil(at time.Time) {
	d := time.Until(at)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// latencies summarises durations.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", len(l),
		l.pct(.50).Round(time.Millisecond/10), l.pct(.90).Round(time.Millisecond/10),
		l.pct(.99).Round(time.Millisecond/10), l.pct(1).Round(time.Millisecond/10))
}

const testPassword = "correct horse battery"

// A provisioning script opens 150 tenant accounts from one address, 8 at
// a time, and logs each in: with the default limits every one is 201 and
// 200 (create_account has 8 places, and a request that finds none waits
// for one instead of being shed; successes are not rate-limited). Then 32
// at once, twice: what the short queue does with a burst larger than it
// is meant for (every answer is a 201 or a 503 overloaded with
// Retry-After; the figures are logged, not asserted). In between, the
// script is run again over accounts it opened: 409s, not failures.
func TestDefaultsServeAProvisioningScript(t *testing.T) {
	t.Parallel()
	_, addr := startDefaultServe(t)
	c := newClient(addr, "127.0.0.1", 64)
	defer c.close()

	var (
		mu      sync.Mutex
		created latencies
		errs    []string
		next    atomic.Int64
	)
	const accounts, parallel = 150, 8
	start := time.Now()
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > accounts {
					return
				}
				t0 := time.Now()
				a, err := c.call(http.MethodPost, "/create_account", "", map[string]any{
					"client_name": fmt.Sprintf("Script Tenant %d", i), "official_email": fmt.Sprintf("ops%d@script.example", i),
					"password": testPassword,
				})
				d := time.Since(t0)
				var lerr error
				var l answer
				if err == nil && a.code == http.StatusCreated {
					id, _ := a.body["client_id"].(string)
					l, lerr = c.call(http.MethodPost, "/login", "", map[string]any{"client_id": id, "password": testPassword})
				}
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Sprintf("create %d: %v", i, err))
				case a.code != http.StatusCreated:
					errs = append(errs, fmt.Sprintf("create %d: %s", i, a))
				case lerr != nil:
					errs = append(errs, fmt.Sprintf("login %d: %v", i, lerr))
				case l.code != http.StatusOK:
					errs = append(errs, fmt.Sprintf("login %d: %s", i, l))
				default:
					created = append(created, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d accounts refused, e.g. %s", len(errs), accounts, errs[0])
	}
	t.Logf("150 accounts, 8 at a time, one address: all 201 + login 200 in %s; create_account latency %s",
		time.Since(start).Round(time.Millisecond), created)
	waits8 := queueWait(t, c)

	// The script run again: 12 accounts it opened before are 409, which
	// is no failure of guessing: the address is not slowed (it would be
	// from the 11th failure), and the next new account is opened.
	for i := 1; i <= 12; i++ {
		c.mustCall(t, http.StatusConflict, http.MethodPost, "/create_account", "", map[string]any{
			"client_name": fmt.Sprintf("Script Tenant %d", i), "official_email": fmt.Sprintf("ops%d@script.example", i),
			"password": testPassword,
		})
	}
	c.mustCall(t, http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Script Tenant 151", "official_email": "ops151@script.example", "password": testPassword,
	})
	base := queueWait(t, c)

	// 32 at once.
	var burst latencies
	codes := map[string]int{}
	for round := range 2 {
		gate := make(chan struct{})
		for i := range 32 {
			wg.Go(func() {
				<-gate
				t0 := time.Now()
				a, err := c.call(http.MethodPost, "/create_account", "", map[string]any{
					"client_name": fmt.Sprintf("Burst %d-%d", round, i), "official_email": fmt.Sprintf("burst%d-%d@script.example", round, i),
					"password": testPassword,
				})
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case a.code == http.StatusCreated:
					burst = append(burst, d)
					codes["201"]++
				case a.code == http.StatusServiceUnavailable && a.body["error"] == "overloaded" && a.retryAfter == "1":
					codes["503 overloaded"]++
				default:
					errs = append(errs, a.String())
				}
			})
		}
		close(gate)
		wg.Wait()
	}
	if len(errs) > 0 {
		t.Fatalf("32 at once: %d answers neither 201 nor 503 overloaded, e.g. %s", len(errs), errs[0])
	}
	waits32 := queueWait(t, c).minus(base)
	t.Logf("create_account queue wait (server side, tms_ingress_queue_wait_seconds): 8 at a time: %s; 32 at once: %s", waits8, waits32)
	t.Logf("32 at once, twice: %v; latency of the 201s %s", codes, burst)
}

// waits is the server's tms_ingress_queue_wait_seconds{route="account_creates"}.
type waits struct {
	count   float64
	sum     float64
	buckets map[string]float64 // le -> cumulative count
}

func (w waits) minus(o waits) waits {
	out := waits{count: w.count - o.count, sum: w.sum - o.sum, buckets: map[string]float64{}}
	for le, n := range w.buckets {
		out.buckets[le] = n - o.buckets[le]
	}
	return out
}

func (w waits) String() string {
	if w.count == 0 {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "n=%.0f mean=%s", w.count, time.Duration(w.sum/w.count*float64(time.Second)).Round(time.Millisecond))
	for _, le := range []string{"0.01", "0.1", "0.5", "1", "2"} {
		fmt.Fprintf(&b, " <=%ss:%.0f%%", le, 100*w.buckets[le]/w.count)
	}
	return b.String()
}

func queueWait(t *testing.T, c *client) waits {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	w := waits{buckets: map[string]float64{}}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "tms_ingress_queue_wait_seconds") || !strings.Contains(line, `route="account_creates"`) {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		switch {
		case strings.HasPrefix(line, "tms_ingress_queue_wait_seconds_count"):
			w.count = v
		case strings.HasPrefix(line, "tms_ingress_queue_wait_seconds_sum"):
			w.sum = v
		default:
			if i := strings.Index(line, `le="`); i >= 0 {
				le := line[i+4:]
				w.buckets[le[:strings.IndexByte(le, '"')]] = v
			}
		}
	}
	return w
}

// Guessing passwords gets an address slowed, then locked out, and a
// client_id locked out for addresses it was never used from; the tenant
// itself, from the address it opened its account from, still logs in;
// another tenant is not touched. Each address is a loopback alias.
// Default limits: 30 failures lock out, slowing from 10.
func TestGuessersAreLockedOutNotTheTenant(t *testing.T) {
	t.Parallel()
	_, addr := startDefaultServe(t)
	from := func(ip string) *client { return newClient(addr, ip, 4) }
	home := from("127.0.0.1")
	defer home.close()
	victim, _ := home.mustCall(t, http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Victim", "official_email": "ops@victim.example", "password": testPassword,
	}).body["client_id"].(string)
	other, _ := home.mustCall(t, http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Bystander", "official_email": "ops@bystander.example", "password": testPassword,
	}).body["client_id"].(string)

	// One guesser address: 10 failures (wrong passwords, an unknown
	// client, a malformed body) are answered for what they are; then it
	// is slowed to one try a second.
	g := from("127.0.0.2")
	defer g.close()
	for i := range 10 {
		body := map[string]any{"client_id": victim, "password": fmt.Sprintf("guess number %d", i)}
		want := http.StatusUnauthorized
		switch i {
		case 3:
			body = map[string]any{"client_id": "nosuchclient", "password": "guess guess guess"}
		case 6:
			body = map[string]any{"client_id": victim} // no password: 400
			want = http.StatusBadRequest
		}
		g.mustCall(t, want, http.MethodPost, "/login", "", body)
	}
	slowed := g.mustCall(t, http.StatusTooManyRequests, http.MethodPost, "/login", "", map[string]any{"client_id": victim, "password": "guess number 10"})
	if slowed.body["error"] != "rate_limited" || slowed.retryAfter != "1" {
		t.Fatalf("11th failure in a row: %s, want 429 rate_limited Retry-After 1", slowed)
	}

	// More guessers against the same client_id, each under the address
	// limit and doing as they are told (waiting Retry-After when slowed):
	// at 30 failures the client_id is locked out, for minutes.
	var guessers []*client
	for n := 3; n <= 7; n++ {
		guessers = append(guessers, from(fmt.Sprintf("127.0.0.%d", n)))
		defer guessers[len(guessers)-1].close()
	}
	var lockout answer
	for i := 0; i < 60 && lockout.code == 0; i++ {
		a, err := guessers[i%len(guessers)].call(http.MethodPost, "/login", "", map[string]any{"client_id": victim, "password": fmt.Sprintf("guess %d", i)})
		switch {
		case err != nil:
			t.Fatalf("guess %d: %v", i, err)
		case a.code == http.StatusUnauthorized:
		case a.code == http.StatusTooManyRequests && a.retryAfter == "1":
			a.honourRetryAfter(t) // slowed: one try a second
		case a.code == http.StatusTooManyRequests:
			lockout = a
		default:
			t.Fatalf("guess %d: %s", i, a)
		}
	}
	if lockout.body["error"] != "rate_limited" || !strings.Contains(fmt.Sprint(lockout.body["message"]), "client_id") {
		t.Fatalf("no lockout of the client_id after 60 guesses: %s", lockout)
	}
	t.Logf("client_id locked out: %s", lockout)
	fresh := from("127.0.0.9")
	defer fresh.close()
	locked := fresh.mustCall(t, http.StatusTooManyRequests, http.MethodPost, "/login", "", map[string]any{"client_id": victim, "password": testPassword})
	if locked.body["error"] != "rate_limited" || locked.retryAfter == "" || !strings.Contains(fmt.Sprint(locked.body["message"]), "client_id") {
		t.Fatalf("the locked-out client_id from a new address: %s", locked)
	}
	// The tenant, from its own address, is not locked out, nor is another
	// tenant from a new address.
	home.mustCall(t, http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": victim, "password": testPassword})
	fresh.mustCall(t, http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": other, "password": testPassword})
	// Successes are not capped: the tenant's script logs in 40 times.
	for range 40 {
		home.mustCall(t, http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": victim, "password": testPassword})
	}
}
