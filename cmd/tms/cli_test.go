package main_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"tms/ops/testkit"
)

// TestCLIExitCodes: through the binary, a mistyped command under help and
// a malformed --database-url are bad command lines (exit 2, one line on
// stderr), and tms version prints the versions (exit 0).
func TestCLIExitCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"help", "nosuch"}, 2, `unknown command "nosuch"`},
		{[]string{"serve", "--database-url", "postgres://tms:hunter2@db1:port/postgres"}, 2, "--database-url"},
		{[]string{"worker", "--nats-url", "nats://127.0.0.1:1", "--database-url", "localhost:5432"}, 2, "--database-url"},
		{[]string{"version", "now"}, 2, "unexpected argument"},
	} {
		p := startTMS(t, nil, tc.args...)
		if code := p.exit(30 * time.Second); code != tc.code {
			t.Errorf("tms %q: exit %d, want %d; stderr %q", tc.args, code, tc.code, p.stderrText())
			continue
		}
		lines := nonEmptyLines(p.stderrText())
		if len(lines) != 1 || !strings.Contains(lines[0], tc.want) || strings.Contains(lines[0], "hunter2") {
			t.Errorf("tms %q: stderr %q, want one line naming %s and no password", tc.args, p.stderrText(), tc.want)
		}
		if out := p.stdoutText(); out != "" {
			t.Errorf("tms %q printed %q", tc.args, out)
		}
	}

	p := startTMS(t, nil, "version")
	if code := p.exit(30 * time.Second); code != 0 || p.stderrText() != "" {
		t.Fatalf("tms version: exit %d, stderr %q", code, p.stderrText())
	}
	out := p.stdoutText()
	for _, want := range []string{`"raw":"tms `, `"raw":"revision `, `"raw":"go go1.`, `"raw":"nats-server ` + server.VERSION + ` (embedded)"`} {
		if !strings.Contains(out, want) {
			t.Errorf("tms version printed %s, want %s in it", out, want)
		}
	}
}

// TestPostgresRefusalIsNotAnOutage: a role or a database that does not
// exist on a running server stops tms with a line that says so and names
// --database-url; only a server that cannot be reached is told to be
// started.
func TestPostgresRefusalIsNotAnOutage(t *testing.T) {
	t.Parallel()
	refused := testkit.Refused(t)
	for _, tc := range []struct {
		url, want, wantNot string
	}{
		{refused.NoRole, refused.NoRoleReason, "start it"},
		{refused.NoDatabase, refused.NoDatabaseReason, "start it"},
		{"postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", "not reachable", "refused tms"},
	} {
		p := startTMS(t, nil, "serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0",
			"--nats-listen", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "var"),
			"--database-url", tc.url, "--db-prefix", "tmst_never_")
		if code := p.exit(60 * time.Second); code != 1 {
			t.Errorf("--database-url %s: exit %d, want 1; stderr %q", tc.url, code, p.stderrText())
			continue
		}
		lines := nonEmptyLines(p.stderrText())
		if len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--database-url") ||
			strings.Contains(lines[0], tc.wantNot) {
			t.Errorf("--database-url %s: stderr %q, want one line saying %q and --database-url, not %q",
				tc.url, p.stderrText(), tc.want, tc.wantNot)
		}
	}
}
