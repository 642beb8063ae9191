package testkit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestFreePorts: the ports are distinct, below the ephemeral range, free
// to listen on, and claimed, so another test binary's FreePorts passes
// them by.
func TestFreePorts(t *testing.T) {
	ports := FreePorts(t, 8)
	seen := map[int]bool{}
	dir := filepath.Join(os.TempDir(), "tms-test-ports")
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice in %v", p, ports)
		}
		seen[p] = true
		if p < lowestTestPort || p >= ephemeralLow() {
			t.Fatalf("port %d outside %d-%d", p, lowestTestPort, ephemeralLow()-1)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("listen on handed-out port %d: %v", p, err)
		}
		ln.Close()
		// A second open file description cannot take the claim, as
		// another process's could not.
		if f, ok := claimPort(dir, p); ok {
			f.Close()
			t.Fatalf("port %d's claim taken again while held", p)
		}
	}
	for _, p := range FreePorts(t, 8) {
		if seen[p] {
			t.Fatalf("port %d handed out again", p)
		}
	}
}
