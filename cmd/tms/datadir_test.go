package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// serveOn is serveArgs on a given data dir.
func serveOn(dir, prefix string) []string {
	return []string{"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", testkit.PostgresURL(),
		"--db-prefix", prefix, "--log-format", "json"}
}

// TestDataDirLocked (issue 7, point 1): a second tms serve on the data dir
// of a running one (other ports) refuses to start with one line naming
// --data-dir and the holder's pid, exit 1, and the first goes on admitting
// tickets; once the holder is SIGKILLed, a new serve starts on the dir (the
// kernel dropped the lock) and finds the ticket.
func TestDataDirLocked(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	dir := t.TempDir()
	first := startTMS(t, nil, serveOn(dir, prefix)...)
	pub := newAPI(t, str(t, first.logEvent("listening"), "public"))
	pub.waitReady(first)
	clientID, token, _ := account(t, pub)

	second := startTMS(t, nil, serveOn(dir, prefix)...)
	if code := second.exit(60 * time.Second); code != 1 {
		t.Fatalf("second serve on one data dir: exit %d, want 1; stderr: %s", code, second.stderrText())
	}
	lines := nonEmptyLines(second.stderrText())
	pid := fmt.Sprintf("pid %d", first.cmd.Process.Pid)
	if len(lines) != 1 || !strings.Contains(lines[0], "--data-dir") || !strings.Contains(lines[0], pid) {
		t.Fatalf("stderr %q: want one line naming --data-dir and %s", second.stderrText(), pid)
	}
	if second.count("embedded NATS started") != 0 {
		t.Fatalf("the second serve started its NATS server on the locked store")
	}

	ticket := map[string]any{"client_id": clientID, "ticket_type": "GOLD"}
	id := str(t, pub.must(http.StatusCreated, http.MethodPost, "/create_ticket", token, ticket), "ticket_id")
	waitAllocated(t, pub, token, id)
	if code, status := readyz(pub); code != http.StatusOK {
		t.Fatalf("first serve after the refused second: /readyz %d %s", code, status)
	}

	first.kill()
	third := startTMS(t, nil, serveOn(dir, prefix)...)
	pub3 := newAPI(t, str(t, third.logEvent("listening"), "public"))
	pub3.waitReady(third)
	if got := pub3.must(http.StatusOK, http.MethodGet, "/tickets/"+id, token, nil); got["status"] != "allocated" {
		t.Fatalf("ticket after the restart on the data dir: %v", got)
	}
	pub3.must(http.StatusCreated, http.MethodPost, "/create_ticket", token, ticket)
	third.stop()
}
