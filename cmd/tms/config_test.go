package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
		{[]string{"serve", "--frozen-horizon", "0"}, nil, "--frozen-horizon"},
		{[]string{"worker", "--nats-url", "nats://a", "--frozen-horizon", "90s"}, nil, "--frozen-horizon"},
		{[]string{"serve", "--frozen-horizon", "2h"}, nil, "--frozen-horizon"},
		{[]string{"ingress", "--nats-url", "nats://a", "--frozen-horizon", "5m"}, nil, "frozen-horizon"}, // the responders plan
		{[]string{"serve", "--reconcile-grace", "5s"}, nil, "reconcile-grace"},                           // the reconciler is gone with the one-write admission
		{[]string{"ingress", "--nats-url", "nats://a", "--ack-wait", "2s"}, nil, "ack-wait"},             // no allocator there
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
		{[]string{"worker", "--nats-url", "nats://a"}, map[string]string{"TMS_FAILPOINT": "ingress.after_reserve:1"}, "never reaches"},
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

// TestConfigFaultTuning: the allocators' ack wait has a default, a
// variable and a flag; TMS_FAILPOINT
// arms a test-only failpoint and shows in the logged config.
func TestConfigFaultTuning(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"worker", "--nats-url", "nats://n1:4222"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AckWait != 30*time.Second || cfg.Failpoint != (failpoint{}) {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = loadConfig([]string{"serve"}, env(map[string]string{
		"TMS_ACK_WAIT": "2s", "TMS_FAILPOINT": "allocator.after_commit:5",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AckWait != 2*time.Second || cfg.Failpoint != (failpoint{Name: "allocator.after_commit", At: 5}) {
		t.Fatalf("set: %+v", cfg)
	}
	logged := fmt.Sprint(cfg.logAttrs()...)
	for _, want := range []string{"ack_wait=2s", "allocator.after_commit:5 (TEST ONLY)"} {
		if !strings.Contains(logged, want) {
			t.Errorf("logged config %s lacks %q", logged, want)
		}
	}
	// An armed hook fires only at its point; others stay nil.
	if cfg.Failpoint.hook("allocator.before_commit", nil) != nil || cfg.Failpoint.hook("allocator.after_commit", nil) == nil {
		t.Fatal("hook armed at the wrong point")
	}
}

// TestConfigDatabaseURL: every server of --database-url must be a
// postgres:// URL that pgx can parse, else it is a bad flag (exit 2) whose
// message names the flag and never the password.
func TestConfigDatabaseURL(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"mysql://tms:pgsecret@db1/tms",
		"db1:5432",
		"postgres://tms:pgsecret@db1:port/postgres",
		"postgres://tms:pgsecret@db1/postgres?sslmode=sometimes",
		"postgres://tms:pgsecret@db1/postgres,http://tms:pgsecret@db2/postgres", // the second of two
		"postgres://tms:pgsecret@[::1/postgres",
	} {
		_, err := loadConfig([]string{"worker", "--nats-url", "nats://n1:4222", "--database-url", bad}, env(nil), io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--database-url") {
			t.Errorf("--database-url %s: %v, want a usage error naming --database-url", bad, err)
			continue
		}
		if strings.Contains(err.Error(), "pgsecret") {
			t.Errorf("--database-url %s: the message shows the password: %v", bad, err)
		}
	}
	for _, good := range []string{
		defaultDatabaseURL,
		"postgresql://tms:pgsecret@db1:5433/postgres?sslmode=require&connect_timeout=5",
		"postgres:///postgres?host=/var/run/postgresql",
		" postgres://db1/postgres , postgres://db2/postgres ",
	} {
		if _, err := loadConfig([]string{"serve", "--database-url", good}, env(nil), io.Discard); err != nil {
			t.Errorf("--database-url %q refused: %v", good, err)
		}
	}
}

// TestHelpAndVersion: help for a command that does not exist is an error
// (exit 2) naming it, not the general help; tms version prints the Go and
// embedded nats-server versions.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help", "nosuch"}, {"help", "serve", "extra"}, {"version", "--verbose"}} {
		var out strings.Builder
		_, err := loadConfig(args, env(nil), &out)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), args[len(args)-1]) {
			t.Errorf("tms %q: %v, want a usage error naming %s", args, err, args[len(args)-1])
		}
		if out.Len() != 0 {
			t.Errorf("tms %q printed %q", args, out.String())
		}
	}
	for args, want := range map[string]string{
		"help":         "version  print the version",
		"help --help":  "Commands:",
		"help serve":   "--http-addr",
		"help worker":  "--ack-wait",
		"help version": "Usage: tms version",
		"version":      "nats-server " + server.VERSION + " (embedded)\n",
	} {
		var out strings.Builder
		if _, err := loadConfig(strings.Fields(args), env(nil), &out); !errors.Is(err, errHelp) {
			t.Errorf("tms %s: %v, want errHelp", args, err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("tms %s printed %q, want %q in it", args, out.String(), want)
		}
	}
}

// TestVersionFromBuildInfo: the revision and its state come from what the
// toolchain stamped; a binary built without VCS information says so.
func TestVersionFromBuildInfo(t *testing.T) {
	t.Parallel()
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "tms", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "c1880cdd967ee3122cb371dd476fae4f85542696"},
			{Key: "vcs.time", Value: "2026-12-01T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	var out strings.Builder
	buildInfoFrom(bi).write(&out)
	for _, want := range []string{"tms v1.2.3\n", "revision c1880cdd967ee3122cb371dd476fae4f85542696 (2026-12-01T12:00:00Z, with uncommitted changes)\n",
		"go go1.26.8 ", "nats-server " + server.VERSION} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output %q lacks %q", out.String(), want)
		}
	}
	out.Reset()
	buildInfoFrom(nil).write(&out)
	if !strings.Contains(out.String(), "tms unknown\nrevision unknown") {
		t.Errorf("version without build info: %q", out.String())
	}
}

// TestConfigLogHasEveryFlag: the start-up line shows every flag of the
// command with the value in force, whatever flags are added later, and no
// password.
func TestConfigLogHasEveryFlag(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{
		"TMS_NATS_URL":     "nats://app:natssecret@n1:4222",
		"TMS_DATABASE_URL": "postgres://tms:pgsecret@db1/postgres",
	}
	for _, cmd := range []string{"serve", "ingress", "worker"} {
		// Every flag set to something other than its default where the
		// flag takes one, so a logged default cannot pass for the value.
		args := []string{cmd}
		probe := newFlagSet(cmd, &config{})
		probe.VisitAll(func(f *flag.Flag) {
			if v, ok := nonDefault[f.Name]; ok {
				args = append(args, "--"+f.Name, v)
			}
		})
		cfg, err := loadConfig(args, env(secrets), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		logged := map[string]string{}
		for _, a := range cfg.logAttrs() {
			attr := a.(slog.Attr)
			logged[attr.Key] = attr.Value.String()
		}
		n := 0
		probe.VisitAll(func(f *flag.Flag) {
			n++
			key := strings.ReplaceAll(f.Name, "-", "_")
			got, ok := logged[key]
			if !ok {
				t.Errorf("%s: flag --%s is not in the logged config %v", cmd, f.Name, logged)
				return
			}
			if want, set := nonDefault[f.Name]; set && !strings.HasSuffix(f.Name, "-url") && got != want {
				t.Errorf("%s: --%s logged as %q, want %q", cmd, f.Name, got, want)
			}
		})
		if n == 0 {
			t.Fatalf("%s has no flags", cmd)
		}
		line := fmt.Sprint(cfg.logAttrs()...)
		if strings.Contains(line, "secret") || !strings.Contains(line, "tms:xxxxx@db1") {
			t.Errorf("%s: logged config %s", cmd, line)
		}
		if cmd != "serve" && !strings.Contains(line, "app:xxxxx@n1") {
			t.Errorf("%s: logged config %s lacks the masked NATS URL", cmd, line)
		}
	}
}

// TestConfigLogHidesSecretFlags: a flag named for a secret is logged
// masked whatever its value, one ending in -url with its password masked.
func TestConfigLogHidesSecretFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.String("nats-password", "hunter2", "")
	fs.String("api-token", "hunter2", "")
	fs.String("backup-url", "postgres://tms:hunter2@db1/postgres", "")
	fs.Int("max-logins", 7, "")
	fs.Duration("hold-ttl", 45*time.Second, "")
	var got []string
	fs.VisitAll(func(f *flag.Flag) { got = append(got, flagAttr(f).String()) })
	line := strings.Join(got, " ")
	if strings.Contains(line, "hunter2") {
		t.Fatalf("logged %s", line)
	}
	for _, want := range []string{"nats_password=xxxxx", "api_token=xxxxx", "backup_url=postgres://tms:xxxxx@db1/postgres",
		"max_logins=7", "hold_ttl=45s"} {
		if !strings.Contains(line, want) {
			t.Errorf("logged %s, want %s in it", line, want)
		}
	}
}

// nonDefault is a valid value other than the default for flags of every
// kind; a flag missing here is still checked for presence in the log.
var nonDefault = map[string]string{
	"http-addr": "127.0.0.1:9080", "internal-addr": "127.0.0.1:9081", "nats-listen": "127.0.0.1:5222",
	"data-dir": "/srv/tms", "db-prefix": "acme_", "hold-ttl": "45s", "ack-wait": "40s", "alloc-batch": "50", "alloc-batch-wait": "7ms",
	"tenant-rate": "123.5", "tenant-burst": "77",
	"client-rate": "9", "client-burst": "7", "max-in-flight": "99", "max-backlog": "4242",
	"max-account-creates": "3", "max-logins": "5", "log-level": "warn", "log-format": "json",
	"database-url": "postgres://tms:pgsecret@db1/postgres", "pprof-addr": "127.0.0.1:6061",
}

// TestCommandFlagsByRole pins which command takes which flag, as the
// space-joined role strings gave them before roles became a set: the
// embedded server's flags are serve's alone, the front's are not the
// worker's, the back's not the ingress's.
func TestCommandFlagsByRole(t *testing.T) {
	only := map[string][]string{
		"serve":   {"nats-listen", "data-dir"},
		"ingress": {"http-addr", "internal-addr", "db-prefix", "tenant-rate", "tenant-burst", "max-in-flight", "soft-in-flight", "admission-target", "max-backlog", "max-account-creates", "max-logins", "queue-wait", "max-failures", "lockout", "client-rate", "client-burst"},
		"worker":  {"hold-ttl", "ack-wait", "alloc-batch", "alloc-batch-wait", "alloc-concurrency", "frozen-horizon"},
	}
	every := []string{"nats-url", "database-url", "replicas", "log-level", "log-format", "pprof-addr"}
	want := map[string]map[string]bool{"serve": {}, "ingress": {}, "worker": {}}
	for _, f := range every {
		for cmd := range want {
			want[cmd][f] = true
		}
	}
	for cmd, flags := range only {
		for _, f := range flags {
			want[cmd][f] = true
			want["serve"][f] = true
		}
	}
	// The worker's operations listener: serve and ingress answer its
	// routes on their own listeners.
	want["worker"]["ops-addr"] = true
	for cmd, flags := range want {
		got := map[string]bool{}
		newFlagSet(cmd, &config{}).VisitAll(func(f *flag.Flag) { got[f.Name] = true })
		if !maps.Equal(got, flags) {
			t.Errorf("tms %s takes %v, want %v", cmd, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(flags)))
		}
	}
	for _, c := range []struct {
		cmd  string
		want roleSet
	}{{"serve", roleFront | roleBack | roleEmbedded}, {"ingress", roleFront}, {"worker", roleBack | roleOps}, {"version", 0}, {"help", 0}, {"nope", 0}} {
		if got := rolesOf(c.cmd); got != c.want {
			t.Errorf("rolesOf(%q) = %b, want %b", c.cmd, got, c.want)
		}
	}
}
