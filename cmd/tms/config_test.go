package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"tms/workers"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	// Default, then the variable, then the flag on the command line.
	cfg, err := loadConfig([]string{"serve"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8080" || cfg.InternalAddr != "127.0.0.1:8081" || cfg.NATSListen != "127.0.0.1:4223" ||
		cfg.DataDir != "./var" || cfg.HoldTTL != 30*time.Second || cfg.DBPrefix != "tms_" || cfg.Replicas != 1 ||
		cfg.DatabaseURL != defaultDatabaseURL || cfg.LogLevel != "info" || cfg.LogFormat != "text" {
		t.Fatalf("defaults: %+v", cfg)
	}
	vars := env(map[string]string{"TMS_HTTP_ADDR": ":9000", "TMS_HOLD_TTL": "45s", "TMS_DATA_DIR": "/srv/tms"})
	cfg, err = loadConfig([]string{"serve", "--http-addr", ":9100"}, vars, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":9100" || cfg.HoldTTL != 45*time.Second || cfg.DataDir != "/srv/tms" {
		t.Fatalf("precedence: %+v", cfg)
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"ingress"}, nil, "--nats-url"},
		{[]string{"worker"}, nil, "--nats-url"},
		{[]string{"serve", "--nats-listen", "4223"}, nil, "--nats-listen"},
		{[]string{"serve", "--replicas", "3"}, nil, "--replicas"},
		{[]string{"ingress", "--nats-url", "nats://a", "--replicas", "0"}, nil, "--replicas"},
		{[]string{"serve", "--hold-ttl", "10ms"}, nil, "--hold-ttl"},
		{[]string{"serve", "--db-prefix", "Bad-Prefix"}, nil, "--db-prefix"},
		{[]string{"serve", "--database-url", " "}, nil, "--database-url"},
		{[]string{"serve", "--log-format", "xml"}, nil, "log format"},
		{[]string{"serve", "extra"}, nil, "unexpected argument"},
		{[]string{"serve"}, map[string]string{"TMS_REPLICAS": "many"}, "TMS_REPLICAS"},
		{[]string{"frobnicate"}, nil, "unknown command"},
		{[]string{"worker", "--http-addr", ":1"}, nil, "http-addr"}, // worker has no listener
		{[]string{"worker", "--nats-url", "nats://a", "--replicas", "0"}, nil, "--replicas"},
		{[]string{"worker", "--nats-url", "nats://a", "--hold-ttl", "1500ms"}, nil, "--hold-ttl"},
		{[]string{"worker", "--nats-url", "nats://a", "--database-url", ""}, nil, "--database-url"},
		{[]string{"worker", "--nats-url", "nats://a", "--db-prefix", "x_"}, nil, "db-prefix"}, // worker creates no databases
		{[]string{"ingress", "--nats-url", "nats://a", "--hold-ttl", "30s"}, nil, "hold-ttl"}, // the responders own holds
		{[]string{"serve", "--ack-wait", "500ms"}, nil, "--ack-wait"},
		{[]string{"serve", "--reconcile-grace", "5s"}, nil, "--reconcile-grace"}, // under the reserve-to-publish bound
		{[]string{"worker", "--nats-url", "nats://a", "--reconcile-interval", "0s"}, nil, "--reconcile-interval"},
		{[]string{"ingress", "--nats-url", "nats://a", "--ack-wait", "2s"}, nil, "ack-wait"}, // no allocator there
		{[]string{"serve", "--tenant-rate", "-1"}, nil, "--tenant-rate"},
		{[]string{"serve"}, map[string]string{"TMS_CLIENT_BURST": "-5"}, "--client-burst"},
		{[]string{"serve"}, map[string]string{"TMS_MAX_BACKLOG": "lots"}, "TMS_MAX_BACKLOG"},
		{[]string{"serve", "--max-failures", "-1"}, nil, "--max-failures"},
		{[]string{"serve", "--lockout", "500ms"}, nil, "--lockout"},
		{[]string{"serve", "--queue-wait", "5s"}, nil, "--queue-wait"}, // past the write timeout with create's own
		{[]string{"serve", "--admission-target", "-1ms"}, nil, "--admission-target"},
		{[]string{"serve", "--soft-in-flight", "-2"}, nil, "--soft-in-flight"},
		{[]string{"worker", "--nats-url", "nats://a", "--tenant-rate", "10"}, nil, "tenant-rate"}, // no front there
		{[]string{"serve"}, map[string]string{"TMS_FAILPOINT": "allocator.before_commit"}, "TMS_FAILPOINT"},
		{[]string{"serve"}, map[string]string{"TMS_FAILPOINT": "allocator.before_commit:0"}, "TMS_FAILPOINT"},
		{[]string{"serve"}, map[string]string{"TMS_FAILPOINT": "nowhere:3"}, "TMS_FAILPOINT"},
		{[]string{"worker", "--nats-url", "nats://a"}, map[string]string{"TMS_FAILPOINT": "ingress.before_publish:1"}, "never reaches"},
		{[]string{"ingress", "--nats-url", "nats://a"}, map[string]string{"TMS_FAILPOINT": "allocator.after_commit:1"}, "never reaches"},
	} {
		_, err := loadConfig(tc.args, env(tc.env), io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadConfig(%q, %v) = %v, want a usage error naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestConfigLogMasksPasswords(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"ingress",
		"--nats-url", "nats://app:natssecret@n1:4222,nats://app:natssecret@n2:4222",
		"--database-url", "postgres://tms:pgsecret@db1/postgres,postgres://tms:pgsecret@db2/postgres"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logged := fmt.Sprint(cfg.logAttrs()...)
	if strings.Contains(logged, "secret") || !strings.Contains(logged, "tms:xxxxx@db2") || !strings.Contains(logged, "app:xxxxx@n2") {
		t.Fatalf("logged config %s", logged)
	}
	if got := cfg.databaseURLs(); len(got) != 2 {
		t.Fatalf("databaseURLs: %q", got)
	}
}

// TestConfigWorker: a worker reads the tenant databases and owns the
// holds, so it takes --database-url, --hold-ttl and --replicas.
func TestConfigWorker(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"worker", "--nats-url", "nats://n1:4222", "--hold-ttl", "45s", "--replicas", "3"},
		env(map[string]string{"TMS_DATABASE_URL": "postgres://tms:pgsecret@db1/postgres", "TMS_DB_PREFIX": "ignored_"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HoldTTL != 45*time.Second || cfg.Replicas != 3 || cfg.DatabaseURL != "postgres://tms:pgsecret@db1/postgres" {
		t.Fatalf("worker config: %+v", cfg)
	}
	logged := fmt.Sprint(cfg.logAttrs()...)
	if !strings.Contains(logged, "hold_ttl") || !strings.Contains(logged, "tms:xxxxx@db1") || strings.Contains(logged, "http_addr") {
		t.Fatalf("worker logged config %s", logged)
	}
}

// TestConfigFaultTuning: the allocators' ack wait and the reconciler's
// grace and interval have defaults, variables and flags; TMS_FAILPOINT
// arms a test-only failpoint and shows in the logged config.
func TestConfigFaultTuning(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"worker", "--nats-url", "nats://n1:4222"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AckWait != 30*time.Second || cfg.ReconcileGrace != workers.DefaultReconcileGrace ||
		cfg.ReconcileInterval != workers.DefaultReconcileInterval || cfg.Failpoint != (failpoint{}) {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = loadConfig([]string{"serve", "--reconcile-interval", "2s"}, env(map[string]string{
		"TMS_ACK_WAIT": "2s", "TMS_RECONCILE_GRACE": "10s", "TMS_RECONCILE_INTERVAL": "7s",
		"TMS_FAILPOINT": "allocator.after_commit:5",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AckWait != 2*time.Second || cfg.ReconcileGrace != 10*time.Second || cfg.ReconcileInterval != 2*time.Second ||
		cfg.Failpoint != (failpoint{Name: "allocator.after_commit", At: 5}) {
		t.Fatalf("set: %+v", cfg)
	}
	logged := fmt.Sprint(cfg.logAttrs()...)
	for _, want := range []string{"ack_wait=2s", "reconcile_grace=10s", "reconcile_interval=2s", "allocator.after_commit:5 (TEST ONLY)"} {
		if !strings.Contains(logged, want) {
			t.Errorf("logged config %s lacks %q", logged, want)
		}
	}
	// An armed hook fires only at its point; others stay nil.
	if cfg.Failpoint.hook("allocator.before_commit", nil) != nil || cfg.Failpoint.hook("allocator.after_commit", nil) == nil {
		t.Fatal("hook armed at the wrong point")
	}
}
