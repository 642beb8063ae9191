package main_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tms/ops/testkit"
)

// Tests of tms bench through the binary, against a tms serve of the
// test's own, at small rates. They check that the figures are
// consistent with each other and with the tenant's database, never a
// latency value or a wall-clock bound.

// benchJSON is the part of a --json line the tests read.
type benchJSON struct {
	Rate        float64 `json:"rate"`
	ClientID    string  `json:"client_id"`
	TicketType  string  `json:"ticket_type"`
	Scheduled   int     `json:"scheduled"`
	Sent        int     `json:"sent"`
	Accepted    int     `json:"accepted"`
	Rejected    int     `json:"rejected"`
	Other4xx    int     `json:"other_4xx"`
	Status5xx   int     `json:"status_5xx"`
	Errors      int     `json:"errors"`
	Dropped     int     `json:"dropped"`
	Interrupted bool    `json:"interrupted"`
	LatencyMS   struct {
		Answered                 int
		P50, P90, P99, P999, Max float64
	} `json:"latency_ms"`
	Answers map[string]int `json:"answers"`
	Tenants int            `json:"tenants"`
	Server  *serverJSON    `json:"server"`
}

// serverJSON is what --metrics-url reported.
type serverJSON struct {
	RSSBytes   int64  `json:"rss_bytes"`
	Goroutines int    `json:"goroutines"`
	Error      string `json:"error"`
}

// accountsJSON is the set-up object --json prints first.
type accountsJSON struct {
	Phase           string
	Tenants         int
	Opened          int
	ClientIDs       []string `json:"client_ids"`
	AgentsPerTenant int      `json:"agents_per_tenant"`
	Agents          int
	DurationS       float64      `json:"duration_s"`
	CreateAccountMS setupLatJSON `json:"create_account_ms"`
	LoginMS         setupLatJSON `json:"login_ms"`
	Retried         int
	TimedOut        bool `json:"timed_out"`
	Interrupted     bool
	Server          *serverJSON
}

// setupLatJSON is the latencies of create_account or login.
type setupLatJSON struct {
	Count              int
	P50, P90, P99, Max float64
}

// check asserts that there are n latencies, positive and in order.
func (l setupLatJSON) check(t *testing.T, what string, n int) {
	t.Helper()
	if l.Count != n || (n > 0 && !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max)) {
		t.Errorf("%s latencies %+v: want %d, positive and ordered", what, l, n)
	}
}

// check asserts what holds for every rate's result: the outcomes add up
// to what was scheduled, the latencies are of the answered requests and
// in order.
func (r benchJSON) check(t *testing.T) {
	t.Helper()
	if sum := r.Accepted + r.Rejected + r.Other4xx + r.Status5xx + r.Errors + r.Dropped; sum != r.Scheduled || r.Sent != r.Scheduled-r.Dropped {
		t.Errorf("outcomes %+v add up to %d, scheduled %d", r, sum, r.Scheduled)
	}
	answers := 0
	for _, n := range r.Answers {
		answers += n
	}
	if l := r.LatencyMS; l.Answered != r.Accepted+r.Rejected+r.Other4xx+r.Status5xx || answers != l.Answered ||
		!(0 <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latencies %+v of %d answers (%v): want one per answer, ordered", l, answers, r.Answers)
	}
	if r.Answers["201"] != r.Accepted || r.Answers["409 sla_unavailable"] != r.Rejected {
		t.Errorf("answers %v, accepted %d, rejected %d", r.Answers, r.Accepted, r.Rejected)
	}
}

// benchResults decodes the --json lines of a finished tms bench: stdout
// holds those and nothing else, the accounts object first.
func benchResults(t *testing.T, p *proc) []benchJSON {
	t.Helper()
	_, res := benchOutput(t, p)
	return res
}

// benchOutput decodes the --json lines of a finished tms bench: the
// accounts object, which comes first, and the rates' objects.
func benchOutput(t *testing.T, p *proc) (accountsJSON, []benchJSON) {
	t.Helper()
	p.mu.Lock()
	lines := append([]map[string]any(nil), p.lines...)
	p.mu.Unlock()
	var acc accountsJSON
	var out []benchJSON
	for i, l := range lines {
		if _, raw := l["raw"]; raw {
			t.Fatalf("tms bench --json printed a line that is not JSON: %v", l["raw"])
		}
		b, _ := json.Marshal(l)
		if phase, ok := l["phase"]; ok || i == 0 {
			if phase != "accounts" || i != 0 {
				t.Fatalf("line %d %s: want the accounts object first and only there", i, b)
			}
			if err := json.Unmarshal(b, &acc); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			continue
		}
		var r benchJSON
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		out = append(out, r)
	}
	if acc.Phase != "accounts" {
		t.Fatalf("tms bench --json printed no accounts object: %q", p.stdoutText())
	}
	return acc, out
}

// runBench runs tms bench to its end and wants exit 0.
func runBench(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := startTMS(t, env, append([]string{"bench"}, args...)...)
	if code := p.exit(3 * time.Minute); code != 0 {
		t.Fatalf("tms bench %q: exit %d; stderr: %s", args, code, p.stderrText())
	}
	return p
}

// ticketCounts is the tenant database's tickets by status.
func ticketCounts(t *testing.T, prefix, clientID string) map[string]int {
	t.Helper()
	return statusCounts(t, prefix+clientID, `SELECT status, count(*) FROM tickets GROUP BY status`)
}

// agentCounts is the tenant database's agents by status.
func agentCounts(t *testing.T, prefix, clientID string) map[string]int {
	t.Helper()
	return statusCounts(t, prefix+clientID, `SELECT status::text, count(*) FROM service_agents GROUP BY status`)
}

// statusCounts runs a "status, count" query in database db.
func statusCounts(t *testing.T, db, query string) map[string]int {
	t.Helper()
	conn := tenantDB(t, db)
	defer conn.Close(testkit.Context(t, 10*time.Second))
	rows, err := conn.Query(testkit.Context(t, 10*time.Second), query)
	if err != nil {
		t.Fatalf("%s in %s: %v", query, db, err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		got[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestBenchAgainstServe runs tms bench against a fresh tms serve: with
// its own tenant (--json, clean-up), with a given one (no agents of its
// own, no clean-up), as a sweep in text, and interrupted by SIGINT.
func TestBenchAgainstServe(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	addr := str(t, serve.logEvent("listening"), "public")
	pub := newAPI(t, addr)
	pub.waitReady(serve)
	url := "http://" + addr

	t.Run("own tenant", func(t *testing.T) {
		t.Parallel()
		p := runBench(t, nil, "--url", url, "--rate", "50", "--duration", "2s", "--agents", "20", "--type", "SILVER", "--json")
		acc, res := benchOutput(t, p)
		if len(res) != 1 {
			t.Fatalf("%d results, want 1", len(res))
		}
		r := res[0]
		r.check(t)
		if acc.Tenants != 1 || acc.Opened != 1 || len(acc.ClientIDs) != 1 || acc.ClientIDs[0] != r.ClientID || acc.Agents != 20 || acc.Server != nil || r.Tenants != 0 || r.Server != nil {
			t.Errorf("accounts %+v, result %+v: want the one account opened, no server figures", acc, r)
		}
		acc.CreateAccountMS.check(t, "create_account", 1)
		acc.LoginMS.check(t, "login", 1)
		if r.Rate != 50 || r.Scheduled != 100 || r.TicketType != "SILVER" || r.Interrupted || r.ClientID == "" {
			t.Fatalf("result %+v: want 100 SILVER requests scheduled at 50/s", r)
		}
		if r.Accepted == 0 {
			t.Fatalf("no ticket accepted: %+v", r)
		}
		t.Logf("%+v", r)
		stderr := p.stderrText()
		for _, want := range []string{"registered 20 agents", "cancelled " + strconv.Itoa(r.Accepted) + " of " + strconv.Itoa(r.Accepted) + " tickets",
			"set 20 of 20 agents unavailable", "logged out: true", "left behind: account " + r.ClientID} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q: %s", want, stderr)
			}
		}
		// Every accepted ticket reaches the tenant's database, and the
		// clean-up cancelled each; the agents are unavailable.
		testkit.Eventually(t, 60*time.Second, func() bool {
			got := ticketCounts(t, prefix, r.ClientID)
			return got["cancelled"] == r.Accepted && len(got) == 1
		}, "every accepted ticket cancelled in the tenant database")
		if got := agentCounts(t, prefix, r.ClientID); got["unavailable"] != 20 || len(got) != 1 {
			t.Errorf("agents after the clean-up: %v, want 20 unavailable", got)
		}
	})

	t.Run("given tenant", func(t *testing.T) {
		t.Parallel()
		const password = "bench tenant password"
		id := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
			"client_name": "Bench Given", "official_email": "given@bench.example", "password": password,
		}), "client_id")
		token := str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": id, "password": password}), "token")
		pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": id, "name": "Only"})

		p := runBench(t, []string{"TMS_BENCH_PASSWORD=" + password}, "--url", url, "--client-id", id,
			"--rate", "50", "--duration", "2s", "--type", "GOLD", "--cleanup=false", "--json")
		acc, res := benchOutput(t, p)
		if len(res) != 1 {
			t.Fatalf("%d results, want 1", len(res))
		}
		if acc.Opened != 0 || len(acc.ClientIDs) != 1 || acc.ClientIDs[0] != id || acc.Agents != 0 {
			t.Errorf("accounts %+v: want the given tenant, nothing opened", acc)
		}
		acc.CreateAccountMS.check(t, "create_account", 0)
		acc.LoginMS.check(t, "login", 1)
		r := res[0]
		r.check(t)
		if r.ClientID != id || r.Scheduled != 100 || r.Accepted == 0 {
			t.Fatalf("result %+v: want 100 requests for %s, some accepted", r, id)
		}
		if strings.Contains(p.stderrText(), "tms bench: registered") || strings.Contains(p.stderrText(), "opened account") {
			t.Errorf("tms bench with --client-id set up more than a login: %s", p.stderrText())
		}
		list := pub.must(http.StatusOK, http.MethodGet, "/agents", token, nil)
		if agents, _ := list["agents"].([]any); len(agents) != 1 {
			t.Errorf("GET /agents after tms bench --client-id: %v, want the one agent", list)
		}
		// No clean-up: every accepted ticket is in the database, live.
		testkit.Eventually(t, 60*time.Second, func() bool {
			got := ticketCounts(t, prefix, id)
			return got["allocated"] == r.Accepted && len(got) == 1
		}, "every accepted ticket allocated in the tenant database")
	})

	t.Run("tenants", func(t *testing.T) {
		t.Parallel()
		p := runBench(t, nil, "--url", url, "--tenants", "3", "--agents", "2", "--rate", "30", "--duration", "1s",
			"--metrics-url", url+"/metrics", "--json")
		acc, res := benchOutput(t, p)
		if acc.Tenants != 3 || acc.Opened != 3 || len(acc.ClientIDs) != 3 || acc.AgentsPerTenant != 2 || acc.Agents != 6 || acc.TimedOut || acc.Interrupted {
			t.Fatalf("accounts %+v: want 3 opened with 2 agents each", acc)
		}
		if ids := acc.ClientIDs; ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] || ids[0] == "" {
			t.Fatalf("client_ids %q: want three tenants", ids)
		}
		acc.CreateAccountMS.check(t, "create_account", 3)
		acc.LoginMS.check(t, "login", 3)
		if m := acc.Server; m == nil || m.RSSBytes <= 0 || m.Goroutines <= 0 || m.Error != "" {
			t.Errorf("server after the set-up %+v: want its RSS and goroutines", m)
		}
		if len(res) != 1 {
			t.Fatalf("%d results, want 1", len(res))
		}
		r := res[0]
		r.check(t)
		if r.Tenants != 3 || r.ClientID != acc.ClientIDs[0] || r.Scheduled != 30 || r.Accepted == 0 {
			t.Fatalf("result %+v: want 30 requests over 3 tenants, some accepted", r)
		}
		if m := r.Server; m == nil || m.RSSBytes <= 0 || m.Goroutines <= 0 || m.Error != "" {
			t.Errorf("server after the rate %+v: want its RSS and goroutines", m)
		}
		t.Logf("%+v\n%+v", acc, r)
		stderr := p.stderrText()
		for _, want := range []string{"cancelled " + strconv.Itoa(r.Accepted) + " of " + strconv.Itoa(r.Accepted) + " tickets",
			"set 6 of 6 agents unavailable", "logged out: true (3 of 3 tenants)", "left behind: 3 accounts",
			"opened 3 of 3 accounts", "round-robin over 3 tenants"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q: %s", want, stderr)
			}
		}
		// Round-robin: every tenant got a third of the requests, its
		// accepted tickets reached its database and the clean-up
		// cancelled each; the agents of every tenant are unavailable.
		testkit.Eventually(t, 60*time.Second, func() bool {
			sum := 0
			for _, id := range acc.ClientIDs {
				got := ticketCounts(t, prefix, id)
				if got["cancelled"] == 0 || len(got) != 1 || r.Accepted == r.Scheduled && got["cancelled"] != 10 {
					return false
				}
				sum += got["cancelled"]
			}
			return sum == r.Accepted
		}, "the accepted tickets cancelled in the three tenants' databases")
		for _, id := range acc.ClientIDs {
			if got := agentCounts(t, prefix, id); got["unavailable"] != 2 || len(got) != 1 {
				t.Errorf("agents of %s after the clean-up: %v, want 2 unavailable", id, got)
			}
		}
	})

	t.Run("setup timeout", func(t *testing.T) {
		t.Parallel()
		p := runBench(t, nil, "--url", url, "--tenants", "20", "--setup-timeout", "1ms", "--agents", "1", "--rate", "5", "--duration", "1s", "--json")
		acc, res := benchOutput(t, p)
		if acc.Tenants != 20 || acc.Opened != 1 || !acc.TimedOut || len(res) != 1 || res[0].Tenants != 0 || res[0].ClientID != acc.ClientIDs[0] {
			t.Fatalf("accounts %+v, results %+v: want one account opened, then the load on it", acc, res)
		}
		res[0].check(t)
		if !strings.Contains(p.stderrText(), "--setup-timeout 1ms passed: going on with 1 of 20 accounts") {
			t.Errorf("stderr %s: want the timeout said", p.stderrText())
		}
	})

	t.Run("interrupted while opening", func(t *testing.T) {
		t.Parallel()
		p := startTMS(t, nil, "bench", "--url", url, "--tenants", "50", "--agents", "1", "--rate", "5", "--duration", "1s", "--json")
		testkit.Eventually(t, 2*time.Minute, func() bool {
			return strings.Contains(p.stderrText(), " of 50 opened") || p.exited()
		}, "a progress line of the accounts")
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := p.exit(3 * time.Minute); code != 0 {
			t.Fatalf("exit %d after SIGINT; stderr: %s", code, p.stderrText())
		}
		acc, res := benchOutput(t, p)
		if !acc.Interrupted || acc.Opened < 1 || acc.Opened >= 50 || len(acc.ClientIDs) != acc.Opened || len(res) != 0 {
			t.Fatalf("accounts %+v, results %+v: want part of the accounts opened and no rate", acc, res)
		}
		acc.CreateAccountMS.check(t, "create_account", acc.Opened)
		if want := "logged out: true (" + strconv.Itoa(acc.Opened) + " of " + strconv.Itoa(acc.Opened) + " tenants)"; acc.Opened > 1 && !strings.Contains(p.stderrText(), want) {
			t.Errorf("stderr %s: want %q", p.stderrText(), want)
		}
		// The signal may have come while the last account's agent was
		// being registered: every agent registered is unavailable.
		unavailable := 0
		for _, id := range acc.ClientIDs {
			got := agentCounts(t, prefix, id)
			if got["available"] != 0 {
				t.Errorf("agents of %s after the clean-up: %v, want none available", id, got)
			}
			unavailable += got["unavailable"]
		}
		if unavailable != acc.Agents || acc.Agents < acc.Opened-1 {
			t.Errorf("%d agents unavailable, %d registered in %d accounts: want every one, in all but perhaps the last account", unavailable, acc.Agents, acc.Opened)
		}
	})

	t.Run("sweep in text", func(t *testing.T) {
		t.Parallel()
		p := runBench(t, nil, "--url", url, "--sweep", "10,20", "--duration", "1s", "--agents", "2", "--metrics-url", url+"/metrics")
		var out []string
		for _, l := range nonEmptyLines(p.stdoutText()) {
			var line struct{ Raw string }
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			out = append(out, line.Raw)
		}
		// The set-up (three lines and the server's), the header, a row and
		// the server's line for each rate, the footnote.
		if len(out) < 10 || !strings.HasPrefix(out[0], "set-up: 1 of 1 accounts opened") || !strings.HasPrefix(out[1], "  create_account  n=1  p50 ") ||
			!strings.HasPrefix(out[2], "  login           n=1  p50 ") || !strings.HasPrefix(out[3], "  server after the set-up: RSS ") ||
			!strings.Contains(out[4], "p99.9") || !strings.Contains(out[len(out)-1], "from each request's due time") {
			t.Fatalf("stdout %q: want the set-up, a header, two rows and the footnote", out)
		}
		var rows [][]string
		servers := 0
		for _, l := range out[5 : len(out)-1] {
			if strings.HasPrefix(l, "  after ") && strings.Contains(l, "/s: server RSS ") && strings.HasSuffix(l, " goroutines") {
				servers++
			}
			f := strings.Fields(l)
			if _, err := strconv.ParseFloat(f[0], 64); err == nil && len(f) >= 18 {
				rows = append(rows, f)
			}
		}
		if len(rows) != 2 || servers != 2 {
			t.Fatalf("stdout %q: want two rows, each with the server's RSS after it", out)
		}
		for i, want := range []int{10, 20} {
			n := make([]int, 10)
			for k := 2; k < 10; k++ {
				n[k], _ = strconv.Atoi(rows[i][k])
			}
			if rows[i][0] != strconv.Itoa(want) || n[2] != want || n[4]+n[5]+n[6]+n[7]+n[8]+n[9] != want || n[3] != want-n[9] {
				t.Errorf("row %q: want %d scheduled and the outcomes adding up", rows[i], want)
			}
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		t.Parallel()
		p := startTMS(t, nil, "bench", "--url", url, "--rate", "50", "--duration", "10m", "--agents", "2", "--json")
		testkit.Eventually(t, 2*time.Minute, func() bool {
			return strings.Contains(p.stderrText(), " answered, p99 ") || p.exited()
		}, "a progress line")
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := p.exit(3 * time.Minute); code != 0 {
			t.Fatalf("exit %d after SIGINT; stderr: %s", code, p.stderrText())
		}
		res := benchResults(t, p)
		if len(res) != 1 {
			t.Fatalf("%d results, want 1", len(res))
		}
		r := res[0]
		r.check(t)
		if !r.Interrupted || r.Scheduled == 0 || r.Scheduled >= 50*600 {
			t.Fatalf("result %+v: want an interrupted part of the schedule", r)
		}
		if !strings.Contains(p.stderrText(), "interrupted: cleaning up") || !strings.Contains(p.stderrText(), "clean-up: cancelled") {
			t.Errorf("stderr %s: want the interruption and the clean-up", p.stderrText())
		}
	})
}

// TestBenchCommandLine: bad flags are exit 2 naming the flag, a server
// that is not there exit 1 saying so, help exit 0; nothing on stdout but
// the help.
func TestBenchCommandLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"bench", "--rate", "-1"}, nil, 2, "--rate"},
		{[]string{"bench", "--sweep", "100,fast"}, nil, 2, "--sweep"},
		{[]string{"bench", "--type", "PLATINUM"}, nil, 2, "--type"},
		{[]string{"bench", "--max-in-flight", "0"}, nil, 2, "--max-in-flight"},
		{[]string{"bench", "--client-id", "c1"}, nil, 2, "--password"},
		{[]string{"bench", "--client-id", "c1", "--password", "a password", "--tenants", "2"}, nil, 2, "--tenants 2 with --client-id"},
		{[]string{"bench", "--tenants", "0"}, nil, 2, "--tenants"},
		{[]string{"bench", "--metrics-url", "127.0.0.1:8080/metrics"}, nil, 2, "--metrics-url"},
		{[]string{"bench", "--frobnicate"}, nil, 2, "-frobnicate"},
		{[]string{"bench"}, []string{"TMS_BENCH_TIMEOUT=soon"}, 2, "TMS_BENCH_TIMEOUT"},
		{[]string{"bench", "--url", "http://127.0.0.1:1", "--rate", "5", "--duration", "1s"}, nil, 1, "nothing answers at http://127.0.0.1:1"},
	} {
		p := startTMS(t, c.env, c.args...)
		if code := p.exit(time.Minute); code != c.code {
			t.Errorf("tms %q: exit %d, want %d; stderr %q", c.args, code, c.code, p.stderrText())
			continue
		}
		lines := nonEmptyLines(p.stderrText())
		if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("tms %q: stderr %q, want one line naming %s", c.args, p.stderrText(), c.want)
		}
		if c.code == 1 && !strings.Contains(lines[0], "--url") {
			t.Errorf("tms %q: stderr %q, want it to name --url", c.args, p.stderrText())
		}
		if out := p.stdoutText(); out != "" {
			t.Errorf("tms %q printed %q", c.args, out)
		}
	}
	for _, args := range [][]string{{"help", "bench"}, {"bench", "-h"}, {"help"}} {
		p := startTMS(t, nil, args...)
		if code := p.exit(30 * time.Second); code != 0 || p.stderrText() != "" {
			t.Fatalf("tms %q: exit %d, stderr %q", args, code, p.stderrText())
		}
		if out := p.stdoutText(); !strings.Contains(out, "bench") || (args[0] != "help" || len(args) > 1) && !strings.Contains(out, "--max-in-flight") {
			t.Errorf("tms %q printed %q", args, out)
		}
	}
}
