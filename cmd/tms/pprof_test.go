package main_test

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// TestPprofListener: with --pprof-addr, tms serve answers /debug/pprof/
// there and only there (the public listener knows no such route); without
// it, the process listens on one socket fewer and logs no profiler. A
// malformed address is exit 2 naming the flag.
func TestPprofListener(t *testing.T) {
	t.Parallel()
	prefix := testkit.DatabasePrefix(t)
	args := serveArgs(t, prefix)
	with := startTMS(t, nil, append(args, "--pprof-addr", "127.0.0.1:0")...)
	without := startTMS(t, nil, serveArgs(t, prefix)...)

	addr, _ := with.logEvent("pprof listener serving")["addr"].(string)
	if addr == "" {
		t.Fatal("no pprof listener address logged")
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatalf("GET /debug/pprof/: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("GET /debug/pprof/ = %d %.200s, want 200 with the profile index", resp.StatusCode, body)
	}
	pub := newAPI(t, with.logEvent("listening")["public"].(string))
	pub.waitReady(with)
	if code, _ := pub.do(http.MethodGet, "/debug/pprof/", "", nil); code != http.StatusNotFound {
		t.Errorf("public GET /debug/pprof/ = %d, want 404", code)
	}

	newAPI(t, without.logEvent("listening")["public"].(string)).waitReady(without)
	if n, m := listeningSockets(t, with.cmd.Process.Pid), listeningSockets(t, without.cmd.Process.Pid); n != m+1 {
		t.Errorf("with --pprof-addr tms listens on %d sockets, without on %d; want exactly one fewer", n, m)
	}
	if without.count("pprof listener serving") != 0 {
		t.Error("a profiler listener was logged without --pprof-addr")
	}
	with.stop()
	without.stop()

	bad := startTMS(t, nil, append(serveArgs(t, prefix), "--pprof-addr", "6060")...)
	if code := bad.exit(30 * time.Second); code != 2 || !strings.Contains(bad.stderrText(), "--pprof-addr") {
		t.Errorf("--pprof-addr 6060: exit %d, stderr %q; want 2 naming --pprof-addr", code, bad.stderrText())
	}
}

// listeningSockets counts the TCP sockets in LISTEN state that process
// pid holds (Linux: its fds against /proc/net/tcp and tcp6).
func listeningSockets(t *testing.T, pid int) int {
	t.Helper()
	listening := map[string]bool{} // socket inode
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if errors.Is(err, fs.ErrNotExist) && table == "/proc/net/tcp6" {
			continue // IPv6 is off: no socket can listen there
		}
		if err != nil {
			t.Fatalf("reading %s (tms runs and is tested on Linux): %v", table, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && fields[3] == "0A" { // TCP_LISTEN
				listening[fields[9]] = true
			}
		}
		f.Close()
	}
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatalf("reading the fds of pid %d, a process the test started: %v", pid, err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok && listening[strings.TrimSuffix(inode, "]")] {
			n++
		}
	}
	return n
}
