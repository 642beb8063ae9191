package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"tms/ingress"
	"tms/ops"
	"tms/subjects"
	"tms/workers"
)

// config is everything a tms command reads from its flags and TMS_*
// environment variables. A flag given on the command line wins over the
// variable, which wins over the default.
type config struct {
	Command      string
	HTTPAddr     string
	InternalAddr string
	OpsAddr      string
	NATSURL      string
	NATSListen   string
	DataDir      string
	DatabaseURL  string
	DBPrefix     string
	HoldTTL      time.Duration
	Frozen       time.Duration
	Replicas     int
	LogLevel     string
	LogFormat    string
	// AckWait is the allocators' ack wait; AllocBatch and AllocBatchWait
	// their per-tenant batches.
	AckWait        time.Duration
	AllocBatch     int
	AllocBatchWait time.Duration
	// AllocConcurrency is the allocators' concurrency when no live
	// setting (tms ops workers scale) overrides it.
	AllocConcurrency int
	// Overload bounds of the front (ingress.OverloadConfig).
	TenantRate        float64
	TenantBurst       int
	ClientRate        float64
	ClientBurst       int
	MaxFailures       int
	Lockout           time.Duration
	MaxInFlight       int
	SoftInFlight      int
	AdmissionTarget   time.Duration
	MaxBacklog        int64
	MaxAccountCreates int
	MaxLogins         int
	QueueWait         time.Duration
	// PprofAddr is the listener of the net/http/pprof handlers (empty:
	// none); never the public one.
	PprofAddr string
	// Failpoint is TMS_FAILPOINT (test only; see failpoint.go).
	Failpoint failpoint
}

// roleSet is a set of the parts a process runs. A command runs a fixed
// set of them (commands, rolesOf); a flag names the parts that read it,
// and a command takes the flag when it runs any of them.
type roleSet uint8

const (
	// roleFront is the HTTP listeners and the public NATS API.
	roleFront roleSet = 1 << iota
	// roleBack is the ETA responders and the allocators.
	roleBack
	// roleEmbedded is the embedded NATS server, which serve runs unless
	// --nats-url names an external one.
	roleEmbedded
	// roleOps is the operations listener (/healthz, /readyz, /metrics)
	// of a process without the front's listeners, which serve these
	// themselves: the worker's.
	roleOps
	// roleAll is every part: the flags every command takes (NATS,
	// Postgres, logs), and the parts of serve.
	roleAll = roleFront | roleBack | roleEmbedded
)

// String names the parts, as the "tms ready" line lists them.
func (s roleSet) String() string {
	var names []string
	for _, p := range []struct {
		r    roleSet
		name string
	}{{roleFront, "front"}, {roleBack, "back"}, {roleEmbedded, "embedded-nats"}, {roleOps, "ops"}} {
		if s&p.r != 0 {
			names = append(names, p.name)
		}
	}
	return strings.Join(names, ",")
}

// has reports whether s holds every part of r.
func (s roleSet) has(r roleSet) bool { return r != 0 && s&r == r }

// overlaps reports whether s and r share a part.
func (s roleSet) overlaps(r roleSet) bool { return s&r != 0 }

// Flags, in the order the help shows them. roles are the parts that read
// the flag.
type flagDef struct {
	name, usage string
	roles       roleSet
	bind        func(fs *flag.FlagSet, c *config, name, usage string)
}

const (
	// defaultDatabaseURL names no sslmode: loopback, so it connects
	// without TLS (withLocalSSLMode).
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres"
	defaultNATSListen  = "127.0.0.1:4223"
)

func str(p func(*config) *string, def string) func(*flag.FlagSet, *config, string, string) {
	return func(fs *flag.FlagSet, c *config, name, usage string) { fs.StringVar(p(c), name, def, usage) }
}

func dur(p func(*config) *time.Duration, def time.Duration) func(*flag.FlagSet, *config, string, string) {
	return func(fs *flag.FlagSet, c *config, name, usage string) { fs.DurationVar(p(c), name, def, usage) }
}

const defaultAckWait = 30 * time.Second

var flagDefs = []flagDef{
	{"http-addr", "public HTTP listener address", roleFront,
		str(func(c *config) *string { return &c.HTTPAddr }, ":8080")},
	{"internal-addr", "internal HTTP listener address (keep it inside the VPN)", roleFront,
		str(func(c *config) *string { return &c.InternalAddr }, "127.0.0.1:8081")},
	{"ops-addr", "operations listener of a worker: /healthz, /readyz and /metrics (serve and ingress answer them on their own listeners)", roleOps,
		str(func(c *config) *string { return &c.OpsAddr }, "127.0.0.1:8082")},
	{"nats-url", "external NATS server or cluster, comma-separated; empty runs an embedded server (serve only)", roleAll,
		str(func(c *config) *string { return &c.NATSURL }, "")},
	{"nats-listen", "client address of the embedded NATS server (port 0: a random free port)", roleEmbedded,
		str(func(c *config) *string { return &c.NATSListen }, defaultNATSListen)},
	{"data-dir", "directory for the embedded NATS server's JetStream store (<data-dir>/nats)", roleEmbedded,
		str(func(c *config) *string { return &c.DataDir }, "./var")},
	{"database-url", "PostgreSQL server(s) holding tenant databases, comma-separated; each URL names the maintenance database; every process lists the same servers. A URL without sslmode (and no PGSSLMODE) whose hosts are all loopback (127.0.0.1, ::1, localhost) or unix sockets connects without TLS (sslmode=disable); any other host gets the pgx default, prefer", roleAll,
		str(func(c *config) *string { return &c.DatabaseURL }, defaultDatabaseURL)},
	{"db-prefix", "name prefix of the tenant databases this process creates (advanced: tests use it to find and drop theirs)", roleFront,
		str(func(c *config) *string { return &c.DBPrefix }, "tms_")},
	{"hold-ttl", "lifetime of a pending slot hold from validate_eta, whole seconds (the ETA responders apply it)", roleBack,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.DurationVar(&c.HoldTTL, name, 30*time.Second, usage)
		}},
	{"frozen-horizon", "feasibility admission moves accepted tickets to other agent-minutes inside their windows to admit more, but never a ticket that starts within this horizon, nor into it; whole minutes from 1m to 1h", roleBack,
		dur(func(c *config) *time.Duration { return &c.Frozen }, 5*time.Minute)},
	{"ack-wait", "how long the stream waits for an allocator's ack before it hands the ticket event to another worker (a worker that died or hangs); the last worker to start sets it for all", roleBack,
		dur(func(c *config) *time.Duration { return &c.AckWait }, defaultAckWait)},
	{"alloc-concurrency", fmt.Sprintf("tenants an allocator process writes at once, one batch each (%d..%d); the live setting of tms ops workers scale overrides it while set", subjects.MinAllocConcurrency, subjects.MaxAllocConcurrency), roleBack,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.AllocConcurrency, name, workers.DefaultAllocConcurrency, usage)
		}},
	{"alloc-batch", "most tickets of one tenant an allocator writes to its database in one transaction", roleBack,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.AllocBatch, name, workers.DefaultAllocBatch, usage)
		}},
	{"alloc-batch-wait", "how long an allocator lets a tenant's batch fill after its first ticket before it writes it (more: fewer commits, later rows; admission does not wait for it)", roleBack,
		dur(func(c *config) *time.Duration { return &c.AllocBatchWait }, workers.DefaultAllocBatchWait)},
	{"tenant-rate", "optional hard cap: requests a second one tenant may make to this process (token bucket; 0: none, the fair share of --max-in-flight applies); over it: 429 with Retry-After", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.Float64Var(&c.TenantRate, name, 0, usage) }},
	{"tenant-burst", "requests one tenant may make at once after a quiet spell, with --tenant-rate (0: the rate rounded up)", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.IntVar(&c.TenantBurst, name, 0, usage) }},
	{"max-in-flight", "admissions (create, cancel, validate_eta, allocate_slot) one process handles at once; past it: 503 at once (negative: no bound)", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.MaxInFlight, name, ingress.DefaultMaxInFlight, usage)
		}},
	{"soft-in-flight", "admissions in flight at which the process counts as saturated: then, with two or more tenants active, a tenant holding its fair share of them or more gets 429 (0: never)", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.SoftInFlight, name, ingress.DefaultSoftInFlight, usage)
		}},
	{"admission-target", "latency of the fastest admission of each 100ms above which the process counts as saturated (a standing queue), for the fair share; a slow machine's floor raises it (0: latency is not watched)", roleFront,
		dur(func(c *config) *time.Duration { return &c.AdmissionTarget }, ingress.DefaultAdmissionTarget)},
	{"max-backlog", "slot records the allocators have not yet written (their consumers' lag over all shards) at which new admissions get 503 (negative: never)", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.Int64Var(&c.MaxBacklog, name, ingress.DefaultMaxBacklog, usage)
		}},
	{"max-account-creates", "create_account requests handled at once (each hashes a password and creates a database); more wait up to --queue-wait", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.MaxAccountCreates, name, ingress.DefaultMaxAccountCreates, usage)
		}},
	{"max-logins", "login requests handled at once (each hashes a password); more wait up to --queue-wait", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) {
			fs.IntVar(&c.MaxLogins, name, ingress.DefaultMaxLogins, usage)
		}},
	{"queue-wait", "how long a create_account or login waits for a place before it gets 503 with Retry-After (0: it does not wait; at most 3s)", roleFront,
		dur(func(c *config) *time.Duration { return &c.QueueWait }, ingress.DefaultQueueWait)},
	{"max-failures", "failed create_account or login attempts (wrong password, unknown client, malformed) from one client IP, or against one client_id, at which it is locked out for --lockout; from a third of it, one try a second (0: not counted)", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.IntVar(&c.MaxFailures, name, 30, usage) }},
	{"lockout", "how long a client IP or client_id that reached --max-failures gets 429; failures are forgotten over the same time", roleFront,
		dur(func(c *config) *time.Duration { return &c.Lockout }, ingress.DefaultLockout)},
	{"client-rate", "create_account requests a second per client IP, a generous bound on the databases one address creates (token bucket; 0: no limit); over it: 429", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.Float64Var(&c.ClientRate, name, 1, usage) }},
	{"client-burst", "create_account requests one client IP may make at once after a quiet spell", roleFront,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.IntVar(&c.ClientBurst, name, 300, usage) }},
	{"replicas", "replicas of the KV buckets and streams tms creates (3 on a 3-node cluster; 1 with the embedded server)", roleAll,
		func(fs *flag.FlagSet, c *config, name, usage string) { fs.IntVar(&c.Replicas, name, 1, usage) }},
	{"log-level", "debug, info, warn or error", roleAll,
		str(func(c *config) *string { return &c.LogLevel }, "info")},
	{"log-format", "text or json", roleAll,
		str(func(c *config) *string { return &c.LogFormat }, "text")},
	{"pprof-addr", "listener of the Go profiler's /debug/pprof/ handlers, e.g. 127.0.0.1:6060 (keep it on loopback: a profile shows the process's internals); empty: off", roleFront | roleBack,
		str(func(c *config) *string { return &c.PprofAddr }, "")},
}

// commands are what tms runs, in the order the help shows them, with the
// parts each runs (none: it prints and exits).
var commands = []struct {
	name    string
	roles   roleSet
	summary string
}{
	{"serve", roleAll, "run everything in one process: embedded NATS (unless --nats-url), HTTP, NATS API, ETA responders, allocators"},
	{"ingress", roleFront, "run the HTTP listeners and the NATS API against an external NATS (--nats-url required)"},
	{"worker", roleBack | roleOps, "run the ETA responders and the allocators against an external NATS (--nats-url required); /healthz, /readyz and /metrics on --ops-addr"},
	{"bench", 0, "load a running tms with create_ticket, open loop, at a rate or a sweep; print latency percentiles"},
	{"ops", 0, "the operators' tool: status, workers (and scale them live), dead letters (list, show, replay), tenants; `tms ops --help`"},
	{"version", 0, "print the version of tms, the Go it was built with and the embedded nats-server"},
	{"help", 0, "show this help; `tms help <command>` shows a command's flags"},
}

// envName is the environment variable of a flag: hold-ttl -> TMS_HOLD_TTL.
func envName(flagName string) string {
	return "TMS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// setHint tells an operator how to change a flag's value.
func setHint(flagName string) string {
	return fmt.Sprintf("set --%s or %s", flagName, envName(flagName))
}

// errHelp means help or the version was asked for and printed: exit 0.
var errHelp = errors.New("help requested")

// usageError is a bad command line or environment: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// loadConfig parses args (without the program name) and the environment.
// Help goes to out.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var cfg config
	if len(args) == 0 {
		printUsage(out)
		return cfg, usagef("no command given: want serve, ingress or worker")
	}
	cmd := args[0]
	switch cmd {
	case "help", "-h", "-help", "--help":
		return cfg, help(args[1:], out)
	case "version":
		if len(args) > 1 {
			return cfg, usagef("tms version: unexpected argument %q (it takes none)", args[1])
		}
		printVersion(out)
		return cfg, errHelp
	}
	if !isCommand(cmd) {
		return cfg, usagef("unknown command %q: want serve, ingress, worker, bench, ops or version (see tms help)", cmd)
	}
	cfg.Command = cmd
	fs := newFlagSet(cmd, &cfg)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(getenv, envName(f.Name))
		if !ok || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("%s=%q: invalid value for --%s: %v", envName(f.Name), v, f.Name, err)
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(out, fs)
			return cfg, errHelp
		}
		return cfg, usagef("tms %s: %v (see tms help %s)", cmd, err, cmd)
	}
	if fs.NArg() > 0 {
		return cfg, usagef("tms %s: unexpected argument %q (see tms help %s)", cmd, fs.Arg(0), cmd)
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	fp, err := parseFailpoint(getenv(failpointEnv), cmd)
	cfg.Failpoint = fp
	return cfg, err
}

// help prints the general help, or a command's flags when args names one.
// An unknown command is a usage error, so a typo does not pass for help.
func help(args []string, out io.Writer) error {
	switch {
	case len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
	case len(args) > 1:
		return usagef("tms help: unexpected argument %q (want tms help [command])", args[1])
	case args[0] == "bench":
		printBenchUsage(out)
		return errHelp
	case args[0] == "ops":
		printOpsUsage(out)
		return errHelp
	case args[0] == "version":
		fmt.Fprint(out, "Usage: tms version\n\nPrints the version and VCS revision of tms, the Go version it was built with\nand the version of the embedded nats-server. It takes no flags.\n")
		return errHelp
	case isCommand(args[0]):
		printCommandUsage(out, newFlagSet(args[0], &config{}))
		return errHelp
	default:
		return usagef("tms help: unknown command %q: want serve, ingress, worker, bench, ops or version (see tms help)", args[0])
	}
	printUsage(out)
	return errHelp
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// isCommand reports whether name is a command that runs parts.
func isCommand(name string) bool { return rolesOf(name) != 0 }

// rolesOf is the parts a command runs: serve all of them, ingress the
// front, worker the back (none for anything else).
func rolesOf(command string) roleSet {
	for _, c := range commands {
		if c.name == command {
			return c.roles
		}
	}
	return 0
}

// embedsNATS reports whether the process runs the embedded NATS server.
func (c *config) embedsNATS() bool {
	return rolesOf(c.Command).has(roleEmbedded) && c.NATSURL == ""
}

func newFlagSet(cmd string, cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("tms "+cmd, flag.ContinueOnError)
	r := rolesOf(cmd)
	for _, d := range flagDefs {
		if d.roles.overlaps(r) {
			d.bind(fs, cfg, d.name, d.usage)
		}
	}
	return fs
}

var dbPrefixRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,29}$`)

func (c *config) validate() error {
	c.NATSURL = strings.TrimSpace(c.NATSURL)
	r := rolesOf(c.Command)
	if c.NATSURL == "" && !r.has(roleEmbedded) {
		return usagef("tms %s needs an external NATS: %s (a comma-separated list for a cluster)", c.Command, setHint("nats-url"))
	}
	if c.embedsNATS() {
		host, port, err := net.SplitHostPort(c.NATSListen)
		if err != nil {
			return usagef("--nats-listen %q: want host:port (%v)", c.NATSListen, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || host == "" {
			return usagef("--nats-listen %q: want host:port with a port number in 0..65535", c.NATSListen)
		}
		if c.Replicas != 1 {
			return usagef("--replicas %d: the embedded server is a single node, so 1 is the only choice (use --nats-url for a cluster)", c.Replicas)
		}
		if strings.TrimSpace(c.DataDir) == "" {
			return usagef("--data-dir is empty: %s", setHint("data-dir"))
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return usagef("--replicas %d: want 1..5", c.Replicas)
	}
	if strings.TrimSpace(c.DatabaseURL) == "" {
		return usagef("--database-url is empty: %s", setHint("database-url"))
	}
	for _, u := range c.databaseURLs() {
		if err := checkDatabaseURL(u); err != nil {
			return usagef("--database-url: %v; want postgres://user[:password]@host[:port]/database[?sslmode=disable], comma-separated for several servers (%s)",
				err, setHint("database-url"))
		}
	}
	if r.has(roleBack) && (c.Frozen < time.Minute || c.Frozen%time.Minute != 0 || c.Frozen > time.Hour) {
		return usagef("--frozen-horizon %s: want whole minutes from 1m to 1h", c.Frozen)
	}
	if r.has(roleFront) && !dbPrefixRE.MatchString(c.DBPrefix) {
		return usagef("--db-prefix %q: want a lower-case letter, then up to 29 of [a-z0-9_]", c.DBPrefix)
	}
	// The hold's lifetime is a per-key TTL, which JetStream counts in
	// whole seconds.
	if r.has(roleBack) && (c.HoldTTL < time.Second || c.HoldTTL%time.Second != 0) {
		return usagef("--hold-ttl %s: want whole seconds, at least 1s", c.HoldTTL)
	}
	if r.has(roleFront) {
		if c.TenantRate < 0 || c.TenantBurst < 0 || c.ClientRate < 0 || c.ClientBurst < 0 || c.MaxFailures < 0 {
			return usagef("--tenant-rate, --tenant-burst, --client-rate, --client-burst, --max-failures: want 0 (no limit) or more")
		}
		if c.SoftInFlight < 0 || c.AdmissionTarget < 0 || c.QueueWait < 0 {
			return usagef("--soft-in-flight, --admission-target, --queue-wait: want 0 (off) or more")
		}
		// create_account's own 12 s and the wait stay inside the
		// server's 15 s write timeout (ingress/server.go).
		if c.QueueWait > 3*time.Second {
			return usagef("--queue-wait %s: want at most 3s, so that a create_account that waited still answers within the write timeout", c.QueueWait)
		}
		if c.Lockout < time.Second {
			return usagef("--lockout %s: want at least 1s", c.Lockout)
		}
	}
	if r.has(roleBack) {
		// The allocators tell the server every third of it that a
		// write is still going on.
		if c.AckWait < time.Second {
			return usagef("--ack-wait %s: want at least 1s", c.AckWait)
		}
		if c.AllocConcurrency < subjects.MinAllocConcurrency || c.AllocConcurrency > subjects.MaxAllocConcurrency {
			return usagef("--alloc-concurrency %d: want %d to %d", c.AllocConcurrency, subjects.MinAllocConcurrency, subjects.MaxAllocConcurrency)
		}
		if c.AllocBatch < 1 || c.AllocBatch > 1000 {
			return usagef("--alloc-batch %d: want 1 to 1000", c.AllocBatch)
		}
		if c.AllocBatchWait < 0 || c.AllocBatchWait > time.Second {
			return usagef("--alloc-batch-wait %s: want 0 to 1s", c.AllocBatchWait)
		}
	}
	if err := c.validatePprof(); err != nil {
		return err
	}
	return c.validateLog()
}

// validatePprof checks --pprof-addr when it is set.
func (c *config) validatePprof() error {
	c.PprofAddr = strings.TrimSpace(c.PprofAddr)
	if c.PprofAddr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.PprofAddr)
	if err != nil {
		return usagef("--pprof-addr %q: want host:port, e.g. 127.0.0.1:6060 (%v)", c.PprofAddr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return usagef("--pprof-addr %q: want host:port with a port number in 0..65535", c.PprofAddr)
	}
	return nil
}

func (c *config) validateLog() error {
	if _, err := ops.NewLogger(io.Discard, c.LogLevel, c.LogFormat); err != nil {
		return usagef("%v (--log-level, --log-format)", err)
	}
	return nil
}

// checkDatabaseURL refuses a server URL that tms could never connect
// with, so a typo is a bad flag (exit 2) rather than a start-up failure.
// The error never shows the password.
func checkDatabaseURL(raw string) error {
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return fmt.Errorf("%s is not a postgres:// or postgresql:// URL", ops.RedactURL(raw))
	}
	// pgconn's own parser is the one that will connect: it knows the
	// ports, sslmode values and parameters. Its error masks the password.
	if _, err := pgconn.ParseConfig(raw); err != nil {
		return err
	}
	return nil
}

// overloadConfig is the front's bounds (without the JetStream, metrics and
// logger the caller adds). Where a flag's 0 means "off", it is the
// OverloadConfig's negative: there 0 means "the default".
func (c *config) overloadConfig() ingress.OverloadConfig {
	off := func(n int) int {
		if n == 0 {
			return -1
		}
		return n
	}
	offDur := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d
	}
	return ingress.OverloadConfig{
		TenantRate: c.TenantRate, TenantBurst: c.TenantBurst,
		ClientRate: c.ClientRate, ClientBurst: c.ClientBurst,
		MaxFailures: c.MaxFailures, Lockout: c.Lockout,
		MaxInFlight: c.MaxInFlight, SoftInFlight: off(c.SoftInFlight), AdmissionTarget: offDur(c.AdmissionTarget),
		MaxBacklog:        c.MaxBacklog,
		MaxAccountCreates: c.MaxAccountCreates, MaxLogins: c.MaxLogins, QueueWait: offDur(c.QueueWait),
	}
}

// databaseURLs splits --database-url into its servers, each with the
// sslmode of withLocalSSLMode.
func (c *config) databaseURLs() []string {
	var out []string
	for _, u := range strings.Split(c.DatabaseURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, withLocalSSLMode(u, os.Getenv("PGSSLMODE")))
		}
	}
	return out
}

// withLocalSSLMode is raw with sslmode=disable added when it names no
// sslmode, pgsslmode (the PGSSLMODE variable pgx would read) is empty,
// and every host it connects to is on this machine: a loopback address
// (127.0.0.1, ::1, localhost) or a unix socket. There TLS protects
// nothing and costs a handshake per connection (pgx's default, prefer,
// tries TLS first). Any other host keeps the pgx default, so a remote
// server that offers TLS is used with it. A URL pgconn cannot parse is
// returned as it is, for checkDatabaseURL to refuse.
func withLocalSSLMode(raw, pgsslmode string) string {
	if pgsslmode != "" {
		return raw
	}
	// The query by hand: url.Parse refuses the host lists
	// (h1:5432,h2:5432) that pgconn takes.
	if _, query, ok := strings.Cut(raw, "?"); ok {
		if q, err := url.ParseQuery(query); err != nil || q.Has("sslmode") {
			return raw
		}
	}
	pc, err := pgconn.ParseConfig(raw)
	if err != nil {
		return raw
	}
	hosts := []string{pc.Host}
	for _, fb := range pc.Fallbacks {
		hosts = append(hosts, fb.Host)
	}
	for _, h := range hosts {
		if !localHost(h) {
			return raw
		}
	}
	if strings.Contains(raw, "?") {
		return raw + "&sslmode=disable"
	}
	return raw + "?sslmode=disable"
}

// localHost reports whether a pgconn host is this machine: a loopback
// name or address, or a unix socket directory.
func localHost(h string) bool {
	if strings.HasPrefix(h, "/") || strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// logAttrs describes the configuration for the start-up log line: every
// flag of the command with its value, read from the flag set itself so
// that a new flag shows without anyone remembering to add it. Passwords in
// URLs are masked, and a flag whose name says it holds a secret is hidden.
func (c *config) logAttrs() []any {
	view := *c
	fs := newFlagSet(c.Command, &view) // binding sets view's fields to the defaults...
	view = *c                          // ...so copy c back: the flags now read its values
	attrs := []any{slog.String("command", c.Command)}
	if c.embedsNATS() {
		attrs = append(attrs, slog.String("nats", "embedded"))
	}
	fs.VisitAll(func(f *flag.Flag) {
		attrs = append(attrs, flagAttr(f))
	})
	if c.Failpoint.Name != "" {
		attrs = append(attrs, slog.String("failpoint", fmt.Sprintf("%s:%d (TEST ONLY)", c.Failpoint.Name, c.Failpoint.At)))
	}
	return attrs
}

// secretFlag matches flag names whose value must never be logged.
var secretFlag = regexp.MustCompile(`password|secret|token`)

// flagAttr is one flag as a log attribute: db-prefix -> db_prefix.
func flagAttr(f *flag.Flag) slog.Attr {
	key := strings.ReplaceAll(f.Name, "-", "_")
	switch {
	case secretFlag.MatchString(f.Name):
		return slog.String(key, "xxxxx")
	case strings.HasSuffix(f.Name, "-url"):
		return slog.String(key, ops.RedactURLs(f.Value.String()))
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return slog.String(key, f.Value.String())
	}
	switch v := g.Get().(type) {
	case time.Duration:
		return slog.String(key, v.String()) // 30s, not 30000000000 in JSON
	case string:
		return slog.String(key, v)
	default:
		return slog.Any(key, v)
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `tms: ticket management with SLA-guaranteed admission.

Usage: tms <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Every flag is also an environment variable: --hold-ttl is TMS_HOLD_TTL.
A flag on the command line wins over the variable, which wins over the default.
Logs go to stdout; a fatal error is one line on stderr (exit 1; 2 for bad flags).
SIGTERM or SIGINT: stop accepting, finish in-flight requests, exit 0.
`)
}

func printCommandUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\nFlags (each also TMS_<NAME>; the command line wins):\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s (%s, default %s)\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
	})
}
