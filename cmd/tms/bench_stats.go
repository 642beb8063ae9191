package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The pure half of tms bench: the open-loop schedule, the tally of one
// rate's answers and its percentiles. No network and no clock of its own,
// so that the tests can check them exactly.

// scheduledCount is how many requests one rate sends: rate x duration,
// rounded down (a request due at the end of the duration is not sent).
func scheduledCount(rate float64, d time.Duration) int {
	if rate <= 0 || d <= 0 {
		return 0
	}
	return int(math.Floor(rate*d.Seconds() + 1e-9))
}

// dueTime is when request i of an open loop that started at start is due:
// start + i/rate, whatever happened to the requests before it.
func dueTime(start time.Time, i int, rate float64) time.Time {
	return start.Add(time.Duration(math.Round(float64(i) * float64(time.Second) / rate)))
}

// outcome is what became of one scheduled request.
type outcome int

const (
	outAccepted  outcome = iota // 201: a ticket was admitted
	outRejected                 // 409 sla_unavailable: no slot fits
	outOther4xx                 // any other 4xx (429 rate_limited, 401 ...)
	outStatus5xx                // 5xx (503 overloaded, unavailable)
	outError                    // no answer: a transport error or the timeout
	outDropped                  // not sent: --max-in-flight requests were outstanding at its due time
)

// tally is one rate's counts and the latencies of its answered requests.
// It is safe for concurrent use.
type tally struct {
	mu        sync.Mutex
	counts    [outDropped + 1]int
	answers   map[string]int // "201", "409 sla_unavailable", "503 overloaded" ...
	latencies []time.Duration
	errSample string // the first transport error, to show what went wrong
	// onRecord, when set, is called after each outcome is recorded (tests
	// wait on it instead of polling the counts).
	onRecord func()
}

// record runs f under the lock, then tells onRecord.
func (y *tally) record(f func()) {
	y.mu.Lock()
	f()
	y.mu.Unlock()
	if y.onRecord != nil {
		y.onRecord()
	}
}

// newTally makes the tally of a rate that schedules about capacity
// requests.
func newTally(capacity int) *tally {
	return &tally{answers: map[string]int{}, latencies: make([]time.Duration, 0, capacity)}
}

// answered records an HTTP answer: its status, its error code ("" for
// none), the ticket it made (201) and the time it arrived. Its latency is
// counted from due, the request's scheduled time, not from when it was
// actually sent: a request the generator sent late counts the delay too
// (no coordinated omission).
func (y *tally) answered(due, at time.Time, status int, code string) {
	y.record(func() {
		o := classify(status, code)
		y.counts[o]++
		key := fmt.Sprint(status)
		if code != "" {
			key += " " + code
		}
		y.answers[key]++
		y.latencies = append(y.latencies, at.Sub(due))
	})
}

// failed records a request that got no answer.
func (y *tally) failed(err error) {
	y.record(func() {
		y.counts[outError]++
		if y.errSample == "" && err != nil {
			y.errSample = err.Error()
		}
	})
}

// dropped records a request that was not sent at its due time.
func (y *tally) dropped() {
	y.record(func() { y.counts[outDropped]++ })
}

// classify maps an HTTP answer to its outcome.
func classify(status int, code string) outcome {
	switch {
	case status == 201:
		return outAccepted
	case status == 409 && code == "sla_unavailable":
		return outRejected
	case status >= 500:
		return outStatus5xx
	default:
		return outOther4xx
	}
}

// progress is the running figures for the line printed every second.
func (y *tally) progress() (done, answered int, p99 time.Duration) {
	y.mu.Lock()
	lat := slices.Clone(y.latencies)
	for _, n := range y.counts {
		done += n
	}
	y.mu.Unlock()
	slices.Sort(lat)
	return done, len(lat), percentile(lat, 99)
}

// percentile is the nearest-rank p-th percentile of sorted: the smallest
// value with at least p% of the values at or below it (0 for none).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// latencySummary is the percentiles of the answered requests' latencies,
// in milliseconds.
type latencySummary struct {
	Answered int     `json:"answered"`
	P50      float64 `json:"p50"`
	P90      float64 `json:"p90"`
	P99      float64 `json:"p99"`
	P999     float64 `json:"p999"`
	Max      float64 `json:"max"`
}

// summarize sorts a copy of lat and takes its percentiles.
func summarize(lat []time.Duration) latencySummary {
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	s := latencySummary{Answered: len(sorted)}
	if len(sorted) == 0 {
		return s
	}
	s.P50, s.P90, s.P99 = ms(percentile(sorted, 50)), ms(percentile(sorted, 90)), ms(percentile(sorted, 99))
	s.P999, s.Max = ms(percentile(sorted, 99.9)), ms(sorted[len(sorted)-1])
	return s
}

// benchResult is the outcome of one rate: the JSON object --json prints
// and the row of the text table.
type benchResult struct {
	Rate        float64 `json:"rate"`       // offered, requests a second
	DurationS   float64 `json:"duration_s"` // of the schedule (shorter if interrupted)
	TicketType  string  `json:"ticket_type"`
	ClientID    string  `json:"client_id"`
	Scheduled   int     `json:"scheduled"` // requests whose due time came
	Sent        int     `json:"sent"`      // scheduled - dropped
	Accepted    int     `json:"accepted"`  // 201
	Rejected    int     `json:"rejected"`  // 409 sla_unavailable
	Other4xx    int     `json:"other_4xx"`
	Status5xx   int     `json:"status_5xx"`
	Errors      int     `json:"errors"`  // no answer: transport error or --timeout
	Dropped     int     `json:"dropped"` // not sent: --max-in-flight outstanding at the due time
	AcceptedPS  float64 `json:"accepted_per_s"`
	RejectedPS  float64 `json:"rejected_per_s"`
	FailedPS    float64 `json:"failed_per_s"` // other_4xx + status_5xx + errors + dropped, a second
	Interrupted bool    `json:"interrupted,omitempty"`
	// LatencyMS is of the answered requests (any HTTP status), counted
	// from each request's due time.
	LatencyMS latencySummary `json:"latency_ms"`
	Answers   map[string]int `json:"answers"` // by status and error code
	ErrSample string         `json:"error_sample,omitempty"`
	// Tenants is how many tenants shared the load, round-robin, when more
	// than one (ClientID is then the first of them); Server is what
	// --metrics-url reported after the rate.
	Tenants int            `json:"tenants,omitempty"`
	Server  *serverMetrics `json:"server,omitempty"`
}

// result sums up the tally of a rate that ran for d.
func (y *tally) result(rate float64, d time.Duration) benchResult {
	y.mu.Lock()
	defer y.mu.Unlock()
	c := y.counts
	r := benchResult{
		Rate: rate, DurationS: math.Round(d.Seconds()*1e3) / 1e3,
		Accepted: c[outAccepted], Rejected: c[outRejected], Other4xx: c[outOther4xx],
		Status5xx: c[outStatus5xx], Errors: c[outError], Dropped: c[outDropped],
		LatencyMS: summarize(y.latencies), ErrSample: y.errSample,
		Answers: make(map[string]int, len(y.answers)),
	}
	for k, v := range y.answers {
		r.Answers[k] = v
	}
	for _, n := range c {
		r.Scheduled += n
	}
	r.Sent = r.Scheduled - r.Dropped
	if s := d.Seconds(); s > 0 {
		per := func(n int) float64 { return math.Round(float64(n)/s*10) / 10 }
		r.AcceptedPS, r.RejectedPS = per(r.Accepted), per(r.Rejected)
		r.FailedPS = per(r.Other4xx + r.Status5xx + r.Errors + r.Dropped)
	}
	return r
}

// textHeader and textRow are the table tms bench prints without --json.
const textHeader = "    rate   secs  scheduled     sent  accepted  rejected  4xx  5xx  errors  dropped   acc/s   rej/s  fail/s      p50      p90      p99    p99.9      max"

// textRow is the result as a row under textHeader.
func (r benchResult) textRow() string {
	d := func(ms float64) string {
		return time.Duration(ms * float64(time.Millisecond)).Round(10 * time.Microsecond).String()
	}
	l := r.LatencyMS
	row := fmt.Sprintf("%8g %6g %10d %8d %9d %9d %4d %4d %7d %8d %7.1f %7.1f %7.1f %8s %8s %8s %8s %8s",
		r.Rate, r.DurationS, r.Scheduled, r.Sent, r.Accepted, r.Rejected, r.Other4xx, r.Status5xx, r.Errors, r.Dropped,
		r.AcceptedPS, r.RejectedPS, r.FailedPS, d(l.P50), d(l.P90), d(l.P99), d(l.P999), d(l.Max))
	if r.Interrupted {
		row += "  (interrupted)"
	}
	return row
}

// answersLine lists the answers other than 201 and 409 sla_unavailable,
// and a transport error, "" when there are none.
func (r benchResult) answersLine() string {
	keys := make([]string, 0, len(r.Answers))
	for k := range r.Answers {
		if k != "201" && k != "409 sla_unavailable" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, r.Answers[k]))
	}
	if r.ErrSample != "" {
		parts = append(parts, "first transport error: "+r.ErrSample)
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("  at %g/s: %s", r.Rate, strings.Join(parts, "; "))
}

// setupLatency is the percentiles of one set-up request's latencies
// (create_account or login), in milliseconds.
type setupLatency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// summarizeSetup takes the percentiles of lat (any order).
func summarizeSetup(lat []time.Duration) setupLatency {
	s := summarize(lat)
	return setupLatency{Count: s.Answered, P50: s.P50, P90: s.P90, P99: s.P99, Max: s.Max}
}

// text is the latencies as "n=3 p50 41ms p90 ... max ...".
func (l setupLatency) text() string {
	d := func(ms float64) string {
		return time.Duration(ms * float64(time.Millisecond)).Round(100 * time.Microsecond).String()
	}
	if l.Count == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d  p50 %s  p90 %s  p99 %s  max %s", l.Count, d(l.P50), d(l.P90), d(l.P99), d(l.Max))
}

// accountsResult is the set-up of a run: the accounts it opened (or the
// tenant it was given), how long create_account and login took, and the
// server's memory after it. --json prints it first, as an object with
// "phase": "accounts", before the objects of the rates (which have no
// "phase").
type accountsResult struct {
	Phase           string   `json:"phase"`   // "accounts"
	Tenants         int      `json:"tenants"` // asked for (--tenants)
	Opened          int      `json:"opened"`  // accounts this run opened (0 with --client-id)
	ClientIDs       []string `json:"client_ids"`
	AgentsPerTenant int      `json:"agents_per_tenant"` // --agents
	Agents          int      `json:"agents"`            // registered by this run, in all tenants
	DurationS       float64  `json:"duration_s"`        // of the whole set-up
	// The latencies are of the answer each request was accepted with;
	// Retried counts the 429 and 503 answers (shed, nothing done) that
	// were tried again after their Retry-After before that.
	CreateAccountMS setupLatency `json:"create_account_ms"`
	LoginMS         setupLatency `json:"login_ms"`
	Retried         int          `json:"retried"`
	// TimedOut: --setup-timeout passed before --tenants accounts were
	// open; the load runs on those opened. Interrupted: a signal came
	// during the set-up; no rate runs.
	TimedOut    bool           `json:"timed_out,omitempty"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Server      *serverMetrics `json:"server,omitempty"` // --metrics-url, after the set-up
}

// textLines is the set-up as text, printed above the table.
func (a accountsResult) textLines() []string {
	var lines []string
	switch {
	case a.Opened == 0:
		lines = append(lines, fmt.Sprintf("set-up: tenant %s given (no account opened), %d agents registered, %gs",
			strings.Join(a.ClientIDs, ","), a.Agents, a.DurationS))
	default:
		lines = append(lines, fmt.Sprintf("set-up: %d of %d accounts opened (create_account, login, %d agents each) in %gs",
			a.Opened, a.Tenants, a.AgentsPerTenant, a.DurationS))
		lines = append(lines, "  create_account  "+a.CreateAccountMS.text())
	}
	lines = append(lines, "  login           "+a.LoginMS.text())
	if a.Retried > 0 {
		lines = append(lines, fmt.Sprintf("  %d shed answers (429, 503) tried again after their Retry-After; the latencies are of the answers taken", a.Retried))
	}
	if a.TimedOut {
		lines = append(lines, fmt.Sprintf("  --setup-timeout passed: the load runs on the %d accounts opened", a.Opened))
	}
	if a.Interrupted {
		lines = append(lines, "  interrupted during the set-up: no rate runs")
	}
	if a.Server != nil {
		lines = append(lines, "  server after the set-up: "+a.Server.text())
	}
	return lines
}

// serverMetrics is what --metrics-url reported at one moment: the
// process's resident memory (process_resident_memory_bytes, from
// client_golang's process collector) and its goroutines (go_goroutines).
// Error says what could not be read; the figures read are kept.
type serverMetrics struct {
	RSSBytes   int64  `json:"rss_bytes,omitempty"`
	Goroutines int    `json:"goroutines,omitempty"`
	Error      string `json:"error,omitempty"`
}

// text is the figures as "RSS 85.3 MiB, 123 goroutines".
func (m *serverMetrics) text() string {
	var parts []string
	if m.RSSBytes > 0 {
		parts = append(parts, fmt.Sprintf("RSS %.1f MiB", float64(m.RSSBytes)/(1<<20)))
	}
	if m.Goroutines > 0 {
		parts = append(parts, fmt.Sprintf("%d goroutines", m.Goroutines))
	}
	if m.Error != "" {
		parts = append(parts, "not read: "+m.Error)
	}
	return strings.Join(parts, ", ")
}

// Names of the two gauges --metrics-url reads.
const (
	metricRSS        = "process_resident_memory_bytes"
	metricGoroutines = "go_goroutines"
)

// parseServerMetrics reads the two gauges out of a Prometheus text
// exposition (format 0.0.4; OpenMetrics text reads the same for these):
// lines "name value [timestamp]" or "name{labels} value [timestamp]",
// comments (#) and blank lines skipped. Only a sample without labels (or
// with empty ones, {}) counts, the first of each name; a name that merely
// starts with one of the two (process_resident_memory_bytes_max) is
// another metric. It returns what it found and an error naming what is
// missing or malformed.
func parseServerMetrics(r io.Reader) (serverMetrics, error) {
	var m serverMetrics
	var rss, gor bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && !(rss && gor) {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ \t")
		if end < 0 {
			continue // a name without a value
		}
		name, rest := line[:end], line[end:]
		if (name != metricRSS || rss) && (name != metricGoroutines || gor) {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			if !strings.HasPrefix(strings.TrimSpace(rest[1:]), "}") {
				continue // a labelled series: not the process's own gauge
			}
			rest = rest[strings.IndexByte(rest, '}')+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			return m, fmt.Errorf("malformed sample %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return m, fmt.Errorf("%s: value %q is not a count", name, fields[0])
		}
		switch name {
		case metricRSS:
			m.RSSBytes, rss = int64(math.Round(v)), true
		case metricGoroutines:
			m.Goroutines, gor = int(math.Round(v)), true
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("reading the exposition: %w", err)
	}
	var missing []string
	if !rss {
		missing = append(missing, metricRSS+" (is the process collector registered?)")
	}
	if !gor {
		missing = append(missing, metricGoroutines)
	}
	if len(missing) > 0 {
		return m, fmt.Errorf("no %s in the exposition", strings.Join(missing, " and no "))
	}
	return m, nil
}
