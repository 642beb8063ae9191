package embedded_test

import (
	"errors"
	"net"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"tms/ops/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSyncAlwaysByDefault: what tms serve starts fsyncs every JetStream
// write before acknowledging it (sync_interval "always"), so an
// acknowledged ticket survives an OS crash or power loss on the one node;
// only an explicit NoSync (benchmarks) turns that off.
func TestSyncAlwaysByDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		noSync, want bool
	}{{false, true}, {true, false}} {
		srv, err := embedded.Start(embedded.Config{Name: "sync", StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSync: tc.noSync})
		if err != nil {
			t.Fatal(err)
		}
		js := srv.JetStreamConfig()
		embedded.Stop(srv)
		if js == nil || js.SyncAlways != tc.want {
			t.Fatalf("NoSync %v: JetStream config %+v, want SyncAlways %v", tc.noSync, js, tc.want)
		}
	}
}

// TestPortInUse: a taken client port is ErrAddrInUse before the server
// starts, so the command can name the flag to change.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = embedded.Start(embedded.Config{Name: "busy", StoreDir: filepath.Join(t.TempDir(), "js"), Host: "127.0.0.1",
		Port: ln.Addr().(*net.TCPAddr).Port})
	if !errors.Is(err, embedded.ErrAddrInUse) {
		t.Fatalf("start on a taken port: %v, want ErrAddrInUse", err)
	}
}
