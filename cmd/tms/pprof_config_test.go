package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestConfigPprofAddr: --pprof-addr (TMS_PPROF_ADDR) is off by default,
// taken by every command that runs parts, and a value that is not
// host:port is a usage error naming the flag.
func TestConfigPprofAddr(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"serve"}, {"ingress", "--nats-url", "nats://a"}, {"worker", "--nats-url", "nats://a"}} {
		cfg, err := loadConfig(args, env(nil), io.Discard)
		if err != nil || cfg.PprofAddr != "" {
			t.Errorf("loadConfig(%q) = %q, %v; want the profiler off", args, cfg.PprofAddr, err)
		}
		cfg, err = loadConfig(args, env(map[string]string{"TMS_PPROF_ADDR": "127.0.0.1:6060"}), io.Discard)
		if err != nil || cfg.PprofAddr != "127.0.0.1:6060" {
			t.Errorf("loadConfig(%q) with TMS_PPROF_ADDR = %q, %v; want 127.0.0.1:6060", args, cfg.PprofAddr, err)
		}
	}
	for _, bad := range []string{"6060", "127.0.0.1:http-ish", "127.0.0.1:70000", "[::1"} {
		_, err := loadConfig([]string{"serve", "--pprof-addr", bad}, env(nil), io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--pprof-addr") {
			t.Errorf("--pprof-addr %q: %v, want a usage error naming --pprof-addr", bad, err)
		}
	}
}
