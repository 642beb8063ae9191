package main_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tms/ops/testkit"
)

// startRunScript runs scripts/run (what make run runs) with the binary
// under test and args, like startTMS. Cleanup, if the test did not stop it,
// asks it to stop (SIGTERM), and kills what is left only after that.
func startRunScript(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "run"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(script, append([]string{tmsBin}, args...)...)
	p.cmd.Env = append(append(cleanEnv(), env...), "GORACE=halt_on_error=1")
	p.cmd.Stdout = &lineWriter{p: p}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start scripts/run: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(60 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("scripts/run stdout:\n%s\nstderr:\n%s", p.stdoutText(), p.stderrText())
		}
	})
	return p
}

// postmasterPID is the pid of the cluster running in dataDir, 0 if none.
func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %q: %v", b, err)
	}
	return pid
}

// alive: pid is a process that has not exited. A zombie (exited, not yet
// reaped by whichever process adopted it) counts as gone.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// worldTraversable opens the test's temporary directories to other users
// as a checkout usually is, so that the postgres user can reach the
// private cluster's directory when the test runs as root.
func worldTraversable(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMakeRunStartsPrivatePostgres: where nothing answers at the
// configured (loopback) URL, make run's script creates a cluster from the
// installed binaries under the data dir, tms serve becomes ready against
// it and opens an account there, and SIGTERM stops tms and then the
// cluster: no postgres process is left. CI machines have PostgreSQL
// installed, so its absence fails the test.
func TestMakeRunStartsPrivatePostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	worldTraversable(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := "postgres://postgres@" + ln.Addr().String() + "/postgres?sslmode=disable"
	ln.Close() // nothing listens there now
	// The data dir as a previous tms serve left it: 0750, closed to the
	// postgres user that runs the cluster when the test runs as root.
	varDir := filepath.Join(dir, "var")
	if err := os.Mkdir(varDir, 0o750); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(varDir, "postgres", "data")
	t.Cleanup(func() {
		// A test that failed half-way must not leave a server running.
		if pid := postmasterPID(t, dataDir); pid != 0 && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
		}
	})

	args := []string{"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--db-prefix", "tmst_makerun_", "--log-format", "json"}
	p := startRunScript(t, []string{"TMS_DATABASE_URL=" + nobody, "TMS_DATA_DIR=" + varDir}, args...)
	pub := newAPI(t, str(t, p.logEvent("listening"), "public"))
	pub.waitReady(p)
	const password = "correct horse battery"
	acct := pub.must(http.StatusCreated, http.MethodPost, "/create_account", "", map[string]any{
		"client_name": "Private Cluster Co", "official_email": "ops@private.example", "password": password,
	})
	clientID := str(t, acct, "client_id")

	started := p.logEvent("starting tms")
	if url := str(t, started, "database_url"); url == nobody || !strings.HasPrefix(url, "postgres://postgres@127.0.0.1:") {
		t.Fatalf("tms used --database-url %s, want the private cluster's", url)
	}
	pid := postmasterPID(t, dataDir)
	if pid == 0 || !alive(pid) {
		t.Fatalf("no private postgres running in %s (postmaster.pid: %d)", dataDir, pid)
	}
	if msg := p.stderrText(); !strings.Contains(msg, "private PostgreSQL running in "+filepath.Join(varDir, "postgres")) {
		t.Fatalf("scripts/run did not say where the cluster is: %q", msg)
	}

	p.stop()
	// pg_ctl stop -w returns once the server removed its pid file, a
	// moment before the process ends.
	testkit.Eventually(t, 30*time.Second, func() bool { return !alive(pid) }, "postgres to exit after make run stopped")
	if left := postmasterPID(t, dataDir); left != 0 {
		t.Fatalf("postmaster.pid left behind (%d)", left)
	}

	// make run again with the default URL, where a server may well answer
	// now: the tenant made above lives in the data dir's private cluster,
	// so that is the one used, and its database takes writes.
	p = startRunScript(t, []string{"TMS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"TMS_DATA_DIR=" + varDir}, args...)
	pub = newAPI(t, str(t, p.logEvent("listening"), "public"))
	pub.waitReady(p)
	token := str(t, pub.must(http.StatusOK, http.MethodPost, "/login", "", map[string]any{"client_id": clientID, "password": password}), "token")
	pub.must(http.StatusCreated, http.MethodPost, "/agents", token, map[string]any{"client_id": clientID, "name": "Ada"})
	pid = postmasterPID(t, dataDir)
	if pid == 0 || !alive(pid) {
		t.Fatalf("the second make run did not use the private cluster in %s", dataDir)
	}
	p.stop()
	testkit.Eventually(t, 30*time.Second, func() bool { return !alive(pid) }, "postgres to exit after the second make run stopped")
}

// TestMakeRunUsesAServerThatAnswers: with a server at the configured URL,
// make run's script runs tms against it as configured and makes no
// cluster of its own.
func TestMakeRunUsesAServerThatAnswers(t *testing.T) {
	t.Parallel()
	varDir := filepath.Join(t.TempDir(), "var")
	p := startRunScript(t, []string{"TMS_DATABASE_URL=" + testkit.PostgresURL(), "TMS_DATA_DIR=" + varDir},
		"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--db-prefix", testkit.DatabasePrefix(t), "--log-format", "json")
	pub := newAPI(t, str(t, p.logEvent("listening"), "public"))
	pub.waitReady(p)
	if url := str(t, p.logEvent("starting tms"), "database_url"); url != testkit.PostgresURL() {
		t.Fatalf("tms used --database-url %s, want %s", url, testkit.PostgresURL())
	}
	p.stop()
	if _, err := os.Stat(filepath.Join(varDir, "postgres")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a private cluster directory was made although a server answers: %v", err)
	}
	if strings.Contains(p.stderrText(), "private") {
		t.Fatalf("scripts/run: %q", p.stderrText())
	}
}

// TestMakeRunMovesOffATakenPort: a port that looked free when the new
// private cluster was made but that another socket holds by the time
// postgres binds it (here bound, not listening, so a connect is still
// refused there) does not fail make run: the new cluster moves to the
// next free port, says so, and tms serve becomes ready on it.
func TestMakeRunMovesOffATakenPort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	worldTraversable(t, dir)
	// A port no other test is handed (testkit.FreePort), bound without
	// listening: a connect there is refused, so the script takes it for
	// free, and postgres's bind fails.
	taken := testkit.FreePort(t)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: taken, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("hold port %d: %v", taken, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := "postgres://postgres@" + ln.Addr().String() + "/postgres?sslmode=disable"
	ln.Close()
	varDir := filepath.Join(dir, "var")
	dataDir := filepath.Join(varDir, "postgres", "data")
	t.Cleanup(func() {
		if pid := postmasterPID(t, dataDir); pid != 0 && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
		}
	})
	p := startRunScript(t, []string{"TMS_DATABASE_URL=" + nobody, "TMS_DATA_DIR=" + varDir,
		fmt.Sprintf("TMS_PG_PORT=%d", taken)},
		"serve", "--http-addr", "127.0.0.1:0", "--internal-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--db-prefix", "tmst_makerun_", "--log-format", "json")
	pub := newAPI(t, str(t, p.logEvent("listening"), "public"))
	pub.waitReady(p)
	url := str(t, p.logEvent("starting tms"), "database_url")
	if strings.Contains(url, fmt.Sprintf(":%d/", taken)) {
		t.Fatalf("tms was pointed at the taken port: %s", url)
	}
	if msg := p.stderrText(); !strings.Contains(msg, fmt.Sprintf("port %d was taken while the cluster started", taken)) {
		t.Fatalf("scripts/run did not say it moved off port %d: %q", taken, msg)
	}
	pid := postmasterPID(t, dataDir)
	p.stop()
	testkit.Eventually(t, 30*time.Second, func() bool { return !alive(pid) }, "postgres to exit after make run stopped")
}
