package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Ports a test must know before its server listens (a cluster's routes,
// a server restarted on the port its clients know) come from below the
// kernel's ephemeral range, so no outgoing connection and no ":0"
// listener of another test can take one meanwhile. Each handed-out port
// is also claimed by a flock on a file under the temp dir, held for the
// life of the test binary, so the test binaries go test runs side by
// side never hand out the same port either.
var (
	portsMu sync.Mutex
	// portClaims keeps the claim files open: closing one drops its lock.
	portClaims = map[int]*os.File{}
)

const lowestTestPort = 10000

// FreePort returns a loopback port that is free now and that no other
// test (in this or another test binary) is handed out.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n distinct ports as FreePort does.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	hi := ephemeralLow()
	dir := filepath.Join(os.TempDir(), "tms-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("test ports: %v", err)
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 10000 {
			t.Fatalf("test ports: no free port in %d-%d", lowestTestPort, hi-1)
		}
		port := lowestTestPort + rand.IntN(hi-lowestTestPort)
		if _, taken := portClaims[port]; taken {
			continue
		}
		f, ok := claimPort(dir, port)
		if !ok {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			f.Close()
			continue
		}
		ln.Close()
		portClaims[port] = f
		ports = append(ports, port)
	}
	return ports
}

// claimPort takes the flock of port's claim file, or reports that another
// test binary holds it.
func claimPort(dir string, port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > lowestTestPort+1000 {
				return lo
			}
		}
	}
	return 32768
}
