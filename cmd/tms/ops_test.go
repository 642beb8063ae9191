package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tms/ops/testkit"
)

// opsRun is one finished tms ops.
type opsRun struct {
	args           []string
	code           int
	stdout, stderr string
}

// runOps runs tms ops with args (after "ops") and waits for it, well past
// its own --timeout.
func runOps(t *testing.T, env []string, args ...string) opsRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tmsBin, append([]string{"ops"}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Env = append(cmd.Env, "GORACE=halt_on_error=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := opsRun{args: args, stdout: out.String(), stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("tms ops %v: %v", args, err)
	}
	return r
}

// mustOps runs tms ops and wants exit 0.
func mustOps(t *testing.T, env []string, args ...string) opsRun {
	t.Helper()
	r := runOps(t, env, args...)
	if r.code != 0 {
		t.Fatalf("tms ops %v: exit %d, stderr %q, stdout:\n%s", args, r.code, r.stderr, r.stdout)
	}
	return r
}

// opsJSON runs tms ops --json and decodes its one document into v.
func opsJSON(t *testing.T, env []string, v any, args ...string) opsRun {
	t.Helper()
	r := mustOps(t, env, append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("tms ops %v --json: %v in:\n%s", args, err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("tms ops %v --json: more than one document:\n%s", args, r.stdout)
	}
	return r
}

// Documents of --json, as far as the tests read them.
type (
	statusDoc struct {
		Health  string   `json:"health"`
		Reasons []string `json:"reasons"`
		NATS    struct {
			Server, Version, Cluster string
			Servers                  []string
		} `json:"nats"`
		Streams []struct {
			Name            string   `json:"name"`
			Replicas        int      `json:"replicas"`
			Current         int      `json:"current"`
			Offline         int      `json:"offline"`
			OfflinePeers    []string `json:"offline_peers"`
			UnderReplicated bool     `json:"under_replicated"`
		} `json:"streams"`
		Consumers []struct {
			Stream, Name string
			Missing      bool
			Pending      uint64 `json:"pending"`
			AckPending   int    `json:"ack_pending"`
		} `json:"consumers"`
		DeadLetters *uint64 `json:"dead_letters"`
		Workers     []struct {
			ID          string `json:"id"`
			Concurrency int    `json:"concurrency"`
		} `json:"workers"`
		Tenants *int `json:"tenants"`
	}
	workersJSON struct {
		Workers []struct {
			ID                string `json:"id"`
			Concurrency       int    `json:"concurrency"`
			ConcurrencySource string `json:"concurrency_source"`
			SettingsRevision  uint64 `json:"settings_revision"`
			Writing           int    `json:"writing"`
			InFlight          int    `json:"in_flight"`
			Settled           uint64 `json:"settled"`
		} `json:"workers"`
		Settings *struct {
			Concurrency int    `json:"concurrency"`
			UpdatedBy   string `json:"updated_by"`
		} `json:"settings"`
		Revision uint64 `json:"revision"`
	}
	dlqListDoc struct {
		Total       uint64 `json:"total"`
		DeadLetters []struct {
			Seq             uint64 `json:"seq"`
			Tenant, Ticket  string
			Reason          string `json:"reason"`
			OriginalSubject string `json:"original_subject"`
		} `json:"dead_letters"`
	}
	replayDoc struct {
		Results []struct {
			Seq     uint64 `json:"seq"`
			Outcome string `json:"outcome"`
			Error   string `json:"error"`
		} `json:"results"`
	}
	tenantJSON struct {
		ID               string `json:"id"`
		Name             string `json:"name"`
		DBName           string `json:"db_name"`
		DBServer         string `json:"db_server"`
		Agents           int    `json:"agents"`
		LiveTickets      *int64 `json:"live_tickets"`
		LiveTicketsError string `json:"live_tickets_error"`
		AgentList        []struct {
			ID string `json:"id"`
		} `json:"agent_list"`
	}
)

// TestOpsBadInput: a bad subcommand, flag or argument is exit 2 with one
// clear line naming it, before any connection; help is exit 0.
func TestOpsBadInput(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a command that got past its checks would
	// fail to connect (exit 1), not exit 2.
	env := []string{"TMS_NATS_URL=nats://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no subcommand"},
		{[]string{"bogus"}, `unknown subcommand "bogus"`},
		{[]string{"dlq"}, "want a verb"},
		{[]string{"dlq", "purge"}, `unknown verb "purge"`},
		{[]string{"tenants", "drop"}, `unknown verb "drop"`},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"status", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"workers", "scale"}, "want --concurrency N"},
		{[]string{"workers", "scale", "--concurrency", "0"}, "--concurrency 0: want 1..256"},
		{[]string{"workers", "scale", "--concurrency", "257"}, "--concurrency 257: want 1..256"},
		{[]string{"workers", "scale", "--concurrency", "many"}, `invalid value "many" for flag -concurrency`},
		{[]string{"workers", "scale", "--concurrency", "4", "--reset"}, "give one of them"},
		{[]string{"dlq", "show"}, "want one dead-letter sequence number"},
		{[]string{"dlq", "show", "abc"}, `"abc" is not a dead-letter sequence number`},
		{[]string{"dlq", "show", "0"}, `"0" is not a dead-letter sequence number`},
		{[]string{"dlq", "replay"}, "want sequence numbers or --all"},
		{[]string{"dlq", "replay", "3", "--all"}, "want sequence numbers or --all"},
		{[]string{"dlq", "replay", "1", "-2"}, "flag provided but not defined: -2"},
		{[]string{"dlq", "replay", "x1"}, `"x1" is not a dead-letter sequence number`},
		{[]string{"dlq", "list", "--limit", "0"}, "--limit 0: want 1..10000"},
		{[]string{"dlq", "list", "--tenant", "no such!"}, "not a tenant id"},
		{[]string{"tenants", "show"}, "want one tenant id"},
		{[]string{"tenants", "list", "--database-url", "mysql://x"}, "is not a postgres://"},
		{[]string{"status", "--timeout", "1ms"}, "--timeout 1ms: want 100ms..1h"},
	} {
		r := runOps(t, env, tc.args...)
		lines := nonEmptyLines(r.stderr)
		if r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || r.stdout != "" {
			t.Errorf("tms ops %v: exit %d, stderr %q, stdout %q; want exit 2 and one line with %q", tc.args, r.code, r.stderr, r.stdout, tc.want)
		}
	}
	// A variable with a bad value names itself.
	if r := runOps(t, []string{"TMS_TIMEOUT=soon"}, "status"); r.code != 2 || !strings.Contains(r.stderr, "TMS_TIMEOUT") {
		t.Errorf("TMS_TIMEOUT=soon: exit %d, stderr %q; want 2 naming the variable", r.code, r.stderr)
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"dlq", "replay", "--help"}} {
		if r := runOps(t, env, args...); r.code != 0 || !strings.Contains(r.stdout, "Usage: tms ops") {
			t.Errorf("tms ops %v: exit %d, stdout %q; want the usage, exit 0", args, r.code, r.stdout)
		}
	}
	// Nothing to talk to: exit 1, one line, the URL named.
	r := runOps(t, env, "status", "--timeout", "300ms")
	if lines := nonEmptyLines(r.stderr); r.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "nats://127.0.0.1:1") {
		t.Errorf("status with no NATS: exit %d, stderr %q; want exit 1 naming the URL", r.code, r.stderr)
	}
}

// opsServe starts tms serve and returns it, its public API and the env
// that points tms ops at its NATS and database server.
func opsServe(t *testing.T, prefix string) (*proc, *api, []string) {
	t.Helper()
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	listening := serve.logEvent("listening")
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub := newAPI(t, str(t, listening, "public"))
	pub.waitReady(serve)
	return serve, pub, []string{"TMS_NATS_URL=" + natsURL, "TMS_DATABASE_URL=" + testkit.PostgresURL()}
}

// TestOpsStatusAndTenants: status against tms serve lists tms's streams
// and buckets, every allocator consumer, the dead letters, the workers
// (serve's own allocators answer), and the tenants once two accounts are
// open; tenants list and show give their placement, agents and live
// tickets.
func TestOpsStatusAndTenants(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve, pub, env := opsServe(t, prefix)

	var st statusDoc
	opsJSON(t, env, &st, "status")
	if st.Tenants == nil || *st.Tenants != 0 {
		t.Errorf("status before any account: tenants %v, want 0", st.Tenants)
	}
	c1, token, _ := account(t, pub)
	c2 := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Second Ltd", "official_email": "ops@second.example", "password": "correct horse battery",
	}), "client_id")
	ticket := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token, map[string]any{"client_id": c1, "ticket_type": "GOLD"}), "ticket_id")
	waitAllocated(t, pub, token, ticket)

	r := opsJSON(t, env, &st, "status")
	streams := map[string]bool{}
	for _, s := range st.Streams {
		streams[s.Name] = true
		if s.Replicas != 1 || s.Current != 1 || s.UnderReplicated {
			t.Errorf("stream %+v on a single server: want 1 replica, current", s)
		}
	}
	for _, want := range []string{"KV_TMS_TENANTS", "KV_TMS_AGENTS", "KV_TMS_RESERVATIONS_0", "KV_TMS_RESERVATIONS_3", "TMS_PARKED", "TMS_TICKETS_DLQ"} {
		if !streams[want] {
			t.Errorf("status lists no %s: %v", want, streams)
		}
	}
	consumers := map[string]bool{}
	for _, c := range st.Consumers {
		if c.Missing {
			t.Errorf("consumer %s/%s missing with serve running", c.Stream, c.Name)
		}
		consumers[c.Stream+"/"+c.Name] = true
	}
	for _, want := range []string{"KV_TMS_RESERVATIONS_0/allocators-0", "KV_TMS_RESERVATIONS_3/allocators-3", "TMS_PARKED/parked"} {
		if !consumers[want] {
			t.Errorf("status lists no consumer %s: %v", want, consumers)
		}
	}
	if st.Tenants == nil || *st.Tenants != 2 {
		t.Errorf("status after two accounts: tenants %v, want 2", st.Tenants)
	}
	if st.DeadLetters == nil || *st.DeadLetters != 0 {
		t.Errorf("dead letters %v, want 0", st.DeadLetters)
	}
	if st.NATS.Version == "" || len(st.NATS.Servers) == 0 {
		t.Errorf("status NATS %+v: want the server's version and the servers known", st.NATS)
	}
	// Needs the workers' side of subjects.SubjectWorkersInfo (serve's
	// allocators answer it).
	if len(st.Workers) < 1 {
		t.Errorf("status: %d workers online, want serve's own (>= 1); reasons %v\n%s", len(st.Workers), st.Reasons, r.stdout)
	}

	// The human form: the health line first, the tables aligned.
	h := mustOps(t, env, "status")
	if lines := strings.Split(h.stdout, "\n"); !strings.HasPrefix(lines[0], "health: ") {
		t.Errorf("status's first line %q, want health: ...", lines[0])
	}
	for _, want := range []string{"STREAM ", "KV_TMS_RESERVATIONS_0 ", "CONSUMER ", "allocators-0 ", "tenants: 2"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("status has no %q:\n%s", want, h.stdout)
		}
	}

	var list struct {
		Tenants []tenantJSON `json:"tenants"`
	}
	opsJSON(t, env, &list, "tenants", "list")
	byID := map[string]tenantJSON{}
	for _, tn := range list.Tenants {
		byID[tn.ID] = tn
	}
	if len(byID) != 2 {
		t.Fatalf("tenants list: %+v, want %s and %s", list.Tenants, c1, c2)
	}
	if tn := byID[c1]; tn.Name != "Tickets Inc" || tn.Agents != 1 || tn.LiveTickets == nil || *tn.LiveTickets != 1 ||
		!strings.HasPrefix(tn.DBName, prefix) || tn.DBServer == "" {
		t.Errorf("tenant %s: %+v (live tickets %v), want Tickets Inc with 1 agent, 1 live ticket, its database", c1, tn, tn.LiveTickets)
	}
	if tn := byID[c2]; tn.Agents != 0 || tn.LiveTickets == nil || *tn.LiveTickets != 0 {
		t.Errorf("tenant %s: %+v, want no agents and 0 live tickets", c2, tn)
	}
	var one tenantJSON
	opsJSON(t, env, &one, "tenants", "show", c1)
	if one.ID != c1 || len(one.AgentList) != 1 || one.LiveTickets == nil || *one.LiveTickets != 1 {
		t.Errorf("tenants show %s: %+v", c1, one)
	}
	// A database server that is not there: the count is unknown, with
	// the reason, and no password is printed.
	bad := mustOps(t, env, "tenants", "list", "--database-url", "postgres://postgres:s3cret@127.0.0.1:1/postgres")
	if !strings.Contains(bad.stdout, "unknown (") || strings.Contains(bad.stdout+bad.stderr, "s3cret") {
		t.Errorf("tenants list against no database server:\n%s\nwant unknown (reason), never the password", bad.stdout)
	}
	if r := runOps(t, env, "tenants", "show", "cnosuchtenant"); r.code != 1 || !strings.Contains(r.stderr, "no tenant cnosuchtenant") {
		t.Errorf("tenants show of an unknown id: exit %d, stderr %q", r.code, r.stderr)
	}
	serve.stop()
}

// TestOpsDeadLetterReplay: a real dead letter (the ticket's agent is
// missing from its tenant's database, so the allocator can never write
// it), listed and shown; once the cause is fixed, replay puts it back
// through the parked stream: the ticket is in the tenant database exactly
// once and the DLQ is empty; a second replay finds nothing and says so.
func TestOpsDeadLetterReplay(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve, pub, env := opsServe(t, prefix)
	clientID, token, agentID := account(t, pub)
	db := tenantDB(t, prefix+clientID)
	ctx := testkit.Context(t, 120*time.Second)

	// The agent vanishes from the tenant database (the ETA responders
	// still see it in KV): its tickets cannot be written.
	var name string
	var since time.Time
	if err := db.QueryRow(ctx, `DELETE FROM service_agents WHERE id = $1 RETURNING name, available_since`, agentID).Scan(&name, &since); err != nil {
		t.Fatal(err)
	}
	ticket := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token, map[string]any{"client_id": clientID, "ticket_type": "GOLD"}), "ticket_id")

	var list dlqListDoc
	testkit.Eventually(t, 60*time.Second, func() bool {
		opsJSON(t, env, &list, "dlq", "list")
		return len(list.DeadLetters) > 0
	}, "the ticket dead-lettered")
	if len(list.DeadLetters) != 1 || list.Total != 1 {
		t.Fatalf("dlq list: %+v, want one dead letter", list)
	}
	dl := list.DeadLetters[0]
	if dl.Tenant != clientID || dl.Ticket != ticket || !strings.Contains(dl.Reason, agentID) || !strings.HasPrefix(dl.OriginalSubject, "$KV.TMS_RESERVATIONS_") {
		t.Errorf("dead letter %+v: want tenant %s, ticket %s, a reason naming agent %s, its slot subject", dl, clientID, ticket, agentID)
	}
	seq := strconv.FormatUint(dl.Seq, 10)
	human := mustOps(t, env, "dlq", "list", "--tenant", clientID)
	if !strings.Contains(human.stdout, "SEQ ") || !strings.Contains(human.stdout, ticket) {
		t.Errorf("dlq list --tenant:\n%s", human.stdout)
	}
	if other := mustOps(t, env, "dlq", "list", "--tenant", "cother"); !strings.Contains(other.stdout, "no dead letters") {
		t.Errorf("dlq list of another tenant:\n%s", other.stdout)
	}
	show := mustOps(t, env, "dlq", "show", seq)
	for _, want := range []string{"Tms-Dead-Letter-Reason:", "Tms-Original-Subject:", "Tms-Original-Sequence:", `"ticket": "` + ticket + `"`} {
		if !strings.Contains(show.stdout, want) {
			t.Errorf("dlq show %s has no %q:\n%s", seq, want, show.stdout)
		}
	}
	var st statusDoc
	opsJSON(t, env, &st, "status")
	if st.Health != "degraded" || st.DeadLetters == nil || *st.DeadLetters != 1 {
		t.Errorf("status with a dead letter: health %s, dead letters %v, reasons %v; want degraded, 1", st.Health, st.DeadLetters, st.Reasons)
	}

	// The cause fixed: the agent is back.
	if _, err := db.Exec(ctx, `INSERT INTO service_agents (id, name, status, available_since) VALUES ($1, $2, 'available', $3)`, agentID, name, since); err != nil {
		t.Fatal(err)
	}
	var replay replayDoc
	opsJSON(t, env, &replay, "dlq", "replay", seq)
	if len(replay.Results) != 1 || replay.Results[0].Outcome != "replayed" {
		t.Fatalf("dlq replay %s: %+v", seq, replay)
	}
	waitAllocated(t, pub, token, ticket)
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE id = $1 AND status = 'allocated'`, ticket).Scan(&n); err != nil || n != 1 {
		t.Errorf("ticket %s rows after the replay: %d (%v), want 1", ticket, n, err)
	}
	opsJSON(t, env, &list, "dlq", "list")
	if list.Total != 0 || len(list.DeadLetters) != 0 {
		t.Errorf("dlq after the replay: %+v, want empty", list)
	}
	// The parked consumer settled it: nothing left behind.
	testkit.Eventually(t, 30*time.Second, func() bool {
		opsJSON(t, env, &st, "status")
		for _, c := range st.Consumers {
			if c.Name == "parked" {
				return c.Pending == 0 && c.AckPending == 0
			}
		}
		t.Fatalf("status lists no parked consumer: %+v", st.Consumers)
		return false
	}, "the parked consumer settled after the replay")

	again := mustOps(t, env, "dlq", "replay", seq)
	if !strings.Contains(again.stdout, "gone") || !strings.Contains(again.stdout, "nothing to do") {
		t.Errorf("second replay of %s:\n%s\nwant gone, nothing to do", seq, again.stdout)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE id = $1`, ticket).Scan(&n); err != nil || n != 1 {
		t.Errorf("ticket %s rows after the second replay: %d (%v), want 1", ticket, n, err)
	}
	if r := runOps(t, env, "dlq", "show", seq); r.code != 1 || !strings.Contains(r.stderr, "no dead letter "+seq) {
		t.Errorf("dlq show of a replayed dead letter: exit %d, stderr %q", r.code, r.stderr)
	}
	serve.stop()
}

// TestOpsWorkersScale: workers scale changes every worker's concurrency
// live, as ops workers shows within a second or so, and --reset gives each
// its own flag back. Needs the workers' side of the contract
// (subjects.KeyAllocatorSettings watched, SubjectWorkersInfo answered).
func TestOpsWorkersScale(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	serve, pub, env := opsServe(t, prefix)
	worker := startTMS(t, env, "worker", "--log-format", "json")
	worker.logEvent("eta responder ready")

	var doc workersJSON
	testkit.Eventually(t, 30*time.Second, func() bool {
		opsJSON(t, env, &doc, "workers")
		return len(doc.Workers) >= 2
	}, "serve and the worker answering tms ops workers")
	if doc.Settings != nil {
		t.Errorf("live setting before any scale: %+v", doc.Settings)
	}
	start := time.Now()
	opsJSON(t, env, &doc, "workers", "scale", "--concurrency", "3")
	t.Logf("scale applied by every worker in %s", time.Since(start))
	if len(doc.Workers) < 2 || doc.Settings == nil || doc.Settings.Concurrency != 3 || !strings.Contains(doc.Settings.UpdatedBy, "@") || doc.Revision == 0 {
		t.Fatalf("workers scale --concurrency 3: %+v", doc)
	}
	for _, w := range doc.Workers {
		if w.Concurrency != 3 || w.ConcurrencySource != "ops" || w.SettingsRevision < doc.Revision {
			t.Errorf("worker %+v after the scale, want concurrency 3 from ops at revision >= %d", w, doc.Revision)
		}
	}
	opsJSON(t, env, &doc, "workers")
	for _, w := range doc.Workers {
		if w.Concurrency != 3 {
			t.Errorf("ops workers after the scale: %+v", w)
		}
	}
	opsJSON(t, env, &doc, "workers", "scale", "--reset")
	for _, w := range doc.Workers {
		if w.ConcurrencySource != "flag" {
			t.Errorf("worker %+v after --reset, want its flag's concurrency", w)
		}
	}

	// What they consume follows: six tenants with a ticket each, every
	// tenant's tickets table locked, so that each batch taken waits in
	// its database. At concurrency 1 a process writes one batch at a
	// time, whatever it has pulled; scaled to 3, the one that pulled
	// three tenants or more (of six over two processes, one did) writes
	// three at once.
	writing := func() (most, inFlight int, settled uint64) {
		opsJSON(t, env, &doc, "workers")
		for _, w := range doc.Workers {
			most = max(most, w.Writing)
			inFlight += w.InFlight
			settled += w.Settled
		}
		return most, inFlight, settled
	}
	opsJSON(t, env, &doc, "workers", "scale", "--concurrency", "1")
	_, _, before := writing()
	ctx := testkit.Context(t, 120*time.Second)
	type held struct {
		id, token, ticket string
		tx                pgx.Tx
	}
	var tenants []held
	for i := range 6 {
		acct := pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
			"client_name": fmt.Sprintf("Scale %d", i), "official_email": fmt.Sprintf("scale%d@ops.example", i), "password": testPassword,
		})
		id := str(t, acct, "client_id")
		token := str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": id, "password": testPassword}), "token")
		pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": id, "name": "Ada"})
		tx, err := tenantDB(t, prefix+id).Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE tickets IN EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, held{id: id, token: token, tx: tx})
	}
	for i := range tenants {
		tenants[i].ticket = str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", tenants[i].token,
			map[string]any{"client_id": tenants[i].id, "ticket_type": "SILVER"}), "ticket_id")
	}
	seen := 0
	testkit.Eventually(t, 15*time.Second, func() bool {
		most, inFlight, _ := writing()
		seen = max(seen, most)
		return inFlight == len(tenants) && most == 1
	}, "the six tickets pulled, one batch written at a time")
	opsJSON(t, env, &doc, "workers", "scale", "--concurrency", "3")
	if seen > 1 {
		t.Errorf("a process wrote %d batches at once at concurrency 1", seen)
	}
	testkit.Eventually(t, 15*time.Second, func() bool {
		most, _, _ := writing()
		return most == 3
	}, "three batches written at once by one process at concurrency 3")
	for _, h := range tenants {
		if err := h.tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range tenants {
		waitAllocated(t, pub, h.token, h.ticket)
	}
	testkit.Eventually(t, 15*time.Second, func() bool {
		_, _, after := writing()
		return after-before >= uint64(len(tenants))
	}, "the workers' settled count grown by the tickets written")
	opsJSON(t, env, &doc, "workers", "scale", "--reset")
	worker.stop()
	serve.stop()
}

// TestOpsClusterUnderReplicated: on a 3-node cluster with R3 streams,
// status shows every stream fully replicated; once a node stops, it shows
// that node offline and the streams UNDER-REPLICATED, and says degraded.
func TestOpsClusterUnderReplicated(t *testing.T) {
	t.Parallel()
	c := testkit.StartCluster(t, 3)
	env := []string{"TMS_NATS_URL=" + c.URLs(), "TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_REPLICAS=3", "TMS_LOG_FORMAT=json"}
	w := startTMS(t, env, "worker")
	w.logEvent("eta responder ready")

	var st statusDoc
	testkit.Eventually(t, 60*time.Second, func() bool {
		opsJSON(t, env, &st, "status")
		if len(st.Streams) == 0 {
			return false
		}
		for _, s := range st.Streams {
			if s.Replicas != 3 || s.Current != 3 {
				return false
			}
		}
		return true
	}, "every stream R3 and current")
	if st.NATS.Cluster == "" || len(st.NATS.Servers) < 3 {
		t.Errorf("status NATS %+v: want the cluster name and 3 servers", st.NATS)
	}
	victim := 2
	c.Stop(victim)
	name := c.Name(victim)
	var last string
	testkit.Eventually(t, 90*time.Second, func() bool {
		r := runOps(t, env, "status", "--json")
		if r.code != 0 {
			last = r.stderr
			return false // the cluster electing leaders again
		}
		last = r.stdout
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v", err)
		}
		if st.Health != "degraded" {
			return false
		}
		for _, s := range st.Streams {
			if !s.UnderReplicated || s.Offline < 1 || !contains(s.OfflinePeers, name) {
				return false
			}
		}
		return true
	}, "every stream UNDER-REPLICATED with "+name+" offline")
	if t.Failed() {
		t.Logf("last status: %s", last)
	}
	h := mustOps(t, env, "status")
	t.Logf("tms ops status with %s stopped:\n%s", name, h.stdout)
	if !strings.Contains(h.stdout, "UNDER-REPLICATED (offline: "+name+")") || !strings.HasPrefix(h.stdout, "health: degraded") {
		t.Errorf("status with %s stopped:\n%s", name, h.stdout)
	}
	w.stop()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
