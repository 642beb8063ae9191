package main_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tms/ops/testkit"
)

// chromiumPath is Debian's chromium, which .ci/chromium (make browser)
// installs.
const chromiumPath = "/usr/bin/chromium"

// browserTimeout bounds everything one browser session does.
const browserTimeout = 90 * time.Second

// statusTenant is a tenant of the status page test: its token, agents and
// accepted tickets (id: type).
type statusTenant struct {
	id, token string
	agents    []string
	tickets   map[string]string
}

// newStatusTenant opens an account; its first create_ticket, before it
// has an agent, is refused (no slot). Then it registers agents and waits
// for GET /capacity to see them, which makes no admission decision.
func newStatusTenant(t *testing.T, pub *api, name string, agents int) statusTenant {
	t.Helper()
	const password = "correct horse battery"
	acct := pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": name, "official_email": "ops@" + strings.ToLower(strings.ReplaceAll(name, " ", "-")) + ".example",
		"password": password,
	})
	st := statusTenant{id: str(t, acct, "client_id"), tickets: map[string]string{}}
	st.token = str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": st.id, "password": password}), "token")
	pub.must(http.StatusConflict, http.MethodPost, "/create_ticket", st.token, map[string]any{"client_id": st.id, "ticket_type": "GOLD"})
	for i := range agents {
		ag := pub.must(http.StatusCreated, http.MethodPost, "/agents", st.token, map[string]any{"client_id": st.id, "name": fmt.Sprintf("%s agent %d", name, i+1)})
		st.agents = append(st.agents, str(t, ag, "agent_id"))
	}
	testkit.Eventually(t, 30*time.Second, func() bool {
		capacity, _ := pub.must(http.StatusOK, http.MethodGet, "/capacity", st.token, nil)["capacity"].([]any)
		for _, line := range capacity {
			if m, _ := line.(map[string]any); m["ticket_type"] == "BRONZE" {
				return m["available"].(float64) > 0
			}
		}
		return false
	}, "GET /capacity to see the agents of "+name)
	return st
}

// create makes n tickets of typ for st.
func (st statusTenant) create(t *testing.T, pub *api, typ string, n int) {
	t.Helper()
	for range n {
		acc := parseAccepted(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", st.token,
			map[string]any{"client_id": st.id, "ticket_type": typ}))
		st.tickets[acc.id] = typ
	}
}

// artifactDir is where the browser test keeps its screenshots:
// $TMS_TEST_ARTIFACTS (.ci/run sets it), else the test's temp dir.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TMS_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// newBrowser starts headless Chromium with a fresh profile; it is closed
// at cleanup. A missing Chromium fails the test, saying how to install it.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the status page test needs Chromium at %s (%v): install it with `make browser` (.ci/chromium, apt-get install chromium)",
			chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx) // closes the browser and waits for it
		cancelBrowser()
		cancelAlloc()
		cancel()
	})
	return bctx
}

// drawn is what the page shows once loaded, read from its DOM.
type drawn struct {
	State      string         `json:"state"`
	Updated    string         `json:"updated"`
	Error      string         `json:"error"`
	ErrorShown bool           `json:"errorShown"`
	BoardShown bool           `json:"boardShown"`
	Rows       []string       `json:"rows"`
	Minutes    map[string]int `json:"minutes"`
	Tickets    []string       `json:"tickets"`
	Capacity   []string       `json:"capacity"`
	Outcomes   []string       `json:"outcomes"`
	Recent     []string       `json:"recent"`
	Codes      []string       `json:"codes"`
	Token      string         `json:"token"`
	HTML       string         `json:"html"`
}

const readDrawn = `(() => {
  const all = (sel, f) => Array.from(document.querySelectorAll(sel), f);
  const minutes = {};
  for (const r of document.querySelectorAll('#calendar-svg rect.minute')) minutes[r.dataset.type] = (minutes[r.dataset.type] || 0) + 1;
  return {
    state: document.body.dataset.state || '',
    updated: document.getElementById('updated').textContent,
    error: document.getElementById('error').textContent,
    errorShown: !document.getElementById('error').hidden,
    boardShown: !document.getElementById('board').hidden,
    rows: all('#calendar-svg g.agent', g => g.dataset.agent),
    minutes: minutes,
    tickets: all('#calendar-svg rect.minute', r => r.dataset.ticket),
    capacity: all('#capacity tbody tr', tr => tr.dataset.type),
    outcomes: all('#recent li', li => li.dataset.outcome),
    recent: all('#recent li[data-ticket]', li => li.dataset.ticket),
    codes: all('#recent li[data-code]', li => li.dataset.code),
    token: sessionStorage.getItem('tms.status.token') || '',
    html: document.documentElement.outerHTML,
  };
})()`

// TestStatusPageInBrowser: tms serve with two tenants, each with agents,
// tickets of the three types and refused requests; headless Chromium
// opens /status, is given tenant A's token and draws A's calendar: one
// element per booked minute, as many of each type as A has tickets, none
// of B's tickets or agents anywhere in the page, the capacity of the
// three types, A's accepted and refused decisions. A screenshot is kept.
// A bad token shows the error state.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	serve := startTMS(t, nil, serveArgs(t, testkit.DatabasePrefix(t))...)
	pub := newAPI(t, str(t, serve.logEvent("listening"), "public"))
	pub.waitReady(serve)

	a := newStatusTenant(t, pub, "Status A", 2)
	b := newStatusTenant(t, pub, "Status B", 1)
	a.create(t, pub, "GOLD", 3)
	a.create(t, pub, "SILVER", 2)
	a.create(t, pub, "BRONZE", 4)
	b.create(t, pub, "GOLD", 2)
	b.create(t, pub, "BRONZE", 1)
	// A type no ticket has: refused, invalid.
	pub.must(http.StatusBadRequest, http.MethodPost, "/create_ticket", a.token, map[string]any{"client_id": a.id, "ticket_type": "PLATINUM"})
	want := map[string]int{}
	for _, typ := range a.tickets {
		want[typ]++
	}

	ctx := newBrowser(t)
	base := pub.base
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/status"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), a.token),
		chromedp.Click(chromedp.ID("show")),
	); err != nil {
		t.Fatalf("opening /status and giving the token: %v", err)
	}
	total := len(a.tickets)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(
		`document.body.dataset.state === 'ready' && document.querySelectorAll('#calendar-svg rect.minute').length === %d && document.querySelectorAll('#recent li').length > 0`, total),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[drawn](readDrawn))
		t.Fatalf("the page did not draw %d booked minutes: %v; page state %q error %q minutes %v", total, err, got.State, got.Error, got.Minutes)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[drawn](readDrawn))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), "status-page-tenant-a.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatalf("writing the screenshot: %v", err)
	}
	t.Logf("status page screenshot: %s (%d bytes)", path, len(shot))
	if len(shot) < 8 || string(shot[1:4]) != "PNG" {
		t.Errorf("the screenshot is not a PNG")
	}

	// What is drawn: A's agents, one element per ticket, by type.
	if !got.BoardShown || got.ErrorShown || !strings.HasPrefix(got.Updated, "updated at ") {
		t.Errorf("board shown %v, error shown %v (%q), updated %q", got.BoardShown, got.ErrorShown, got.Error, got.Updated)
	}
	if rows := slices.Sorted(slices.Values(got.Rows)); !slices.Equal(rows, slices.Sorted(slices.Values(a.agents))) {
		t.Errorf("calendar rows %v, want tenant A's agents %v", got.Rows, a.agents)
	}
	for _, typ := range []string{"GOLD", "SILVER", "BRONZE"} {
		if got.Minutes[typ] != want[typ] {
			t.Errorf("%d booked minutes of %s drawn, want tenant A's %d tickets (all drawn: %v)", got.Minutes[typ], typ, want[typ], got.Minutes)
		}
	}
	if len(got.Minutes) != 3 {
		t.Errorf("booked minutes of types %v, want GOLD, SILVER and BRONZE only", got.Minutes)
	}
	for _, id := range got.Tickets {
		if _, ok := a.tickets[id]; !ok {
			t.Errorf("the calendar draws ticket %q, which is not tenant A's", id)
		}
	}
	if len(got.Tickets) != len(a.tickets) {
		t.Errorf("the calendar draws %d tickets, tenant A has %d", len(got.Tickets), len(a.tickets))
	}
	// Nothing of tenant B anywhere in the page.
	for id := range b.tickets {
		if strings.Contains(got.HTML, id) {
			t.Errorf("tenant B's ticket %s is in tenant A's page", id)
		}
	}
	for _, id := range append([]string{b.id}, b.agents...) {
		if strings.Contains(got.HTML, id) {
			t.Errorf("tenant B's id %s is in tenant A's page", id)
		}
	}
	// Capacity: the three types.
	if capacity := slices.Sorted(slices.Values(got.Capacity)); !slices.Equal(capacity, []string{"BRONZE", "GOLD", "SILVER"}) {
		t.Errorf("capacity rows %v, want the three types", got.Capacity)
	}
	// Recent decisions: every accepted ticket of A, and its refusals (no
	// slot before its agents, the invalid type).
	if recent := slices.Sorted(slices.Values(got.Recent)); !slices.Equal(recent, slices.Sorted(maps.Keys(a.tickets))) {
		t.Errorf("recent decisions name tickets %v, want tenant A's %d", got.Recent, len(a.tickets))
	}
	if n := countOf(got.Outcomes, "refused"); n != 2 || countOf(got.Outcomes, "accepted") != len(a.tickets) {
		t.Errorf("recent outcomes %v, want %d accepted and 2 refused", got.Outcomes, len(a.tickets))
	}
	if codes := slices.Sorted(slices.Values(got.Codes)); !slices.Equal(codes, []string{"invalid_field", "sla_unavailable"}) {
		t.Errorf("refusal codes %v, want invalid_field and sla_unavailable", got.Codes)
	}
	// The token is in the tab's sessionStorage, not in the URL.
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || loc != base+"/status" || got.Token != a.token {
		t.Errorf("location %q (%v), sessionStorage token kept: %v", loc, err, got.Token == a.token)
	}

	// A bad token: the error state, nothing drawn.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("forget")),
		chromedp.SendKeys(chromedp.ID("token"), "not-a-token"),
		chromedp.Click(chromedp.ID("show")),
	); err != nil {
		t.Fatalf("giving a bad token: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.body.dataset.state === 'refused'`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page did not refuse the bad token: %v", err)
	}
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[drawn](readDrawn))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	if !bad.ErrorShown || !strings.Contains(bad.Error, "token refused") || bad.BoardShown || bad.Token != "" ||
		bad.Updated != "not loaded" || len(bad.Tickets) != 0 || len(bad.Recent) != 0 || strings.Contains(bad.HTML, a.agents[0]) {
		t.Errorf("bad token: error shown %v %q, board shown %v, token kept %q, updated %q, tenant A's tickets still in the page: %d",
			bad.ErrorShown, bad.Error, bad.BoardShown, bad.Token, bad.Updated, len(bad.Tickets))
	}
	if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(artifactDir(t), "status-page-bad-token.png")
		if err := os.WriteFile(path, shot, 0o644); err == nil {
			t.Logf("bad token screenshot: %s", path)
		}
	}

	// A tenant with no agent and no decision: the empty states.
	const password = "correct horse battery"
	c := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Status C", "official_email": "ops@status-c.example", "password": password,
	}), "client_id")
	tokenC := str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": c, "password": password}), "token")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("token"), tokenC),
		chromedp.Click(chromedp.ID("show")),
	); err != nil {
		t.Fatalf("giving tenant C's token: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.body.dataset.state === 'ready'`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page did not load tenant C: %v", err)
	}
	empty, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`({
		calendar: document.getElementById('calendar-empty').hidden ? '' : document.getElementById('calendar-empty').textContent,
		recent: document.getElementById('recent-empty').hidden ? '' : document.getElementById('recent-empty').textContent,
		rows: document.querySelectorAll('#calendar-svg g.agent').length,
		minutes: document.querySelectorAll('#calendar-svg rect.minute').length,
		decisions: document.querySelectorAll('#recent li').length,
		capacity: document.querySelectorAll('#capacity tbody tr').length,
	})`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	if !strings.Contains(fmt.Sprint(empty["calendar"]), "No agents") || !strings.Contains(fmt.Sprint(empty["recent"]), "No create_ticket decisions") ||
		empty["rows"] != float64(0) || empty["minutes"] != float64(0) || empty["decisions"] != float64(0) || empty["capacity"] != float64(3) {
		t.Errorf("tenant C's empty page: %v", empty)
	}
	serve.stop()
}

func countOf(list []string, v string) int {
	n := 0
	for _, s := range list {
		if s == v {
			n++
		}
	}
	return n
}
