package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops"
	"tms/subjects"
)

// tms ops: the operators' view of a running tms, through NATS (and the
// tenant databases for tenants): status, the workers and their live
// concurrency, the dead letters and their replay, the tenants.

// opsConfig is what tms ops reads from its flags; the common ones also
// from TMS_<NAME> variables (opsEnvFlags).
type opsConfig struct {
	// Command is the subcommand path, e.g. "dlq replay"; Args its
	// positional arguments.
	Command string
	Args    []string

	NATSURL     string
	DatabaseURL string
	JSON        bool
	Timeout     time.Duration
	Replicas    int

	// Subcommand flags.
	Tenant      string
	Limit       int
	All         bool
	Concurrency int
	Reset       bool
}

const defaultOpsNATSURL = "nats://127.0.0.1:4223"

// opsEnvFlags are the flags a TMS_<NAME> variable sets: the ones that say
// where the system is, shared with the other commands' variables. The
// subcommands' own flags (--concurrency, --tenant...) take no variable, so
// a shell's leftover setting never scales workers or replays dead letters.
var opsEnvFlags = map[string]bool{"nats-url": true, "database-url": true, "json": true, "timeout": true, "replicas": true}

// opsCommands are the subcommands, in the order the help shows them.
var opsCommands = []struct{ name, args, summary string }{
	{"status", "", "NATS, streams and buckets (replication), the allocators' consumers, dead letters, workers online, tenants; first line health: ok or degraded: reasons"},
	{"workers", "", "the workers online: concurrency and where it came from, writing, in flight, settled a second"},
	{"workers scale", "--concurrency N | --reset", "set every allocator's concurrency live (KV " + subjects.BucketOps + "), wait until every worker applied it; --reset goes back to each process's --alloc-concurrency"},
	{"dlq list", "[--tenant T] [--limit N]", "the dead letters: sequence, time, tenant, ticket, reason, original subject"},
	{"dlq show", "SEQ", "one dead letter: its headers and pretty-printed body"},
	{"dlq replay", "SEQ... | --all [--tenant T]", "put dead letters back through the parked stream (after fixing their cause); each is deleted from the DLQ once the parked stream has it"},
	{"tenants list", "", "the tenants: id, name, database placement, agents, live tickets (needs --database-url)"},
	{"tenants show", "ID", "one tenant and its agents"},
}

func opsFlags(c *opsConfig, sub string) *flag.FlagSet {
	fs := flag.NewFlagSet("tms ops "+sub, flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats-url", defaultOpsNATSURL, "NATS server or cluster of the tms to look at, comma-separated (the default is what make run's embedded server listens on)")
	fs.BoolVar(&c.JSON, "json", false, "machine output: one JSON document on stdout")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "bounds the whole command, connecting included")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the "+subjects.BucketOps+" bucket if workers scale must create it (3 on a 3-node cluster)")
	switch sub {
	case "tenants list", "tenants show":
		fs.StringVar(&c.DatabaseURL, "database-url", defaultDatabaseURL, "PostgreSQL server(s) holding the tenant databases, comma-separated, as tms serve's --database-url; live tickets are counted there")
	case "workers scale":
		fs.IntVar(&c.Concurrency, "concurrency", 0, fmt.Sprintf("tenants each allocator process writes at once, %d..%d", subjects.MinAllocConcurrency, subjects.MaxAllocConcurrency))
		fs.BoolVar(&c.Reset, "reset", false, "delete the live setting: each process goes back to its --alloc-concurrency")
	case "dlq list":
		fs.StringVar(&c.Tenant, "tenant", "", "only this tenant's dead letters")
		fs.IntVar(&c.Limit, "limit", 100, "most dead letters listed (oldest first), 1..10000")
	case "dlq replay":
		fs.StringVar(&c.Tenant, "tenant", "", "with --all: only this tenant's dead letters")
		fs.BoolVar(&c.All, "all", false, "replay every dead letter (of --tenant)")
	}
	return fs
}

// opsSubcommand splits the subcommand path off args: "status", or a group
// and its verb ("dlq list"); workers alone is the table.
func opsSubcommand(args []string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usagef("tms ops: no subcommand given: want status, workers, dlq or tenants (see tms ops --help)")
	}
	verbs := map[string][]string{"workers": {"scale"}, "dlq": {"list", "show", "replay"}, "tenants": {"list", "show"}}
	group := args[0]
	switch group {
	case "status":
		return group, args[1:], nil
	case "workers":
		if len(args) > 1 && args[1] == "scale" {
			return "workers scale", args[2:], nil
		}
		return group, args[1:], nil
	case "dlq", "tenants":
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return "", nil, usagef("tms ops %s: want a verb: %s (see tms ops --help)", group, strings.Join(verbs[group], ", "))
		}
		for _, v := range verbs[group] {
			if args[1] == v {
				return group + " " + v, args[2:], nil
			}
		}
		return "", nil, usagef("tms ops %s: unknown verb %q: want %s (see tms ops --help)", group, args[1], strings.Join(verbs[group], ", "))
	}
	return "", nil, usagef("tms ops: unknown subcommand %q: want status, workers, dlq or tenants (see tms ops --help)", group)
}

// loadOpsConfig parses tms ops's arguments (after "ops"). Flags and
// positional arguments may come in any order.
func loadOpsConfig(args []string, getenv func(string) string, out io.Writer) (opsConfig, error) {
	var c opsConfig
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || (len(args) > 0 && args[0] == "help") {
			printOpsUsage(out)
			return c, errHelp
		}
		if a == "--" {
			break
		}
	}
	sub, rest, err := opsSubcommand(args)
	if err != nil {
		return c, err
	}
	c.Command = sub
	fs := opsFlags(&c, sub)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if !opsEnvFlags[f.Name] || envErr != nil {
			return
		}
		v, ok := lookupEnv(getenv, envName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("%s=%q: invalid value for --%s: %v", envName(f.Name), v, f.Name, err)
		}
	})
	if envErr != nil {
		return c, envErr
	}
	fs.SetOutput(io.Discard)
	for {
		if err := fs.Parse(rest); err != nil {
			return c, usagef("tms ops %s: %v (see tms ops --help)", sub, err)
		}
		if fs.NArg() == 0 {
			break
		}
		c.Args = append(c.Args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return c, c.finish(set)
}

// finish checks the values and the positional arguments of the subcommand.
func (c *opsConfig) finish(set map[string]bool) error {
	c.NATSURL = strings.TrimSpace(c.NATSURL)
	if c.NATSURL == "" {
		return usagef("tms ops: --nats-url is empty: %s", setHint("nats-url"))
	}
	if c.Timeout < 100*time.Millisecond || c.Timeout > time.Hour {
		return usagef("tms ops: --timeout %s: want 100ms..1h", c.Timeout)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return usagef("tms ops: --replicas %d: want 1..5", c.Replicas)
	}
	noArgs := func() error {
		if len(c.Args) > 0 {
			return usagef("tms ops %s: unexpected argument %q (see tms ops --help)", c.Command, c.Args[0])
		}
		return nil
	}
	validTenant := func(what string) error {
		if err := subjects.ValidID(c.Tenant); c.Tenant != "" && err != nil {
			return usagef("tms ops %s: %s %q: not a tenant id", c.Command, what, c.Tenant)
		}
		return nil
	}
	switch c.Command {
	case "status", "workers":
		return noArgs()
	case "tenants list":
		if err := noArgs(); err != nil {
			return err
		}
		return c.checkDatabaseURL()
	case "workers scale":
		if err := noArgs(); err != nil {
			return err
		}
		switch {
		case c.Reset && set["concurrency"]:
			return usagef("tms ops workers scale: --concurrency and --reset: give one of them")
		case c.Reset:
			return nil
		case !set["concurrency"]:
			return usagef("tms ops workers scale: want --concurrency N (1..256) or --reset")
		}
		if c.Concurrency < subjects.MinAllocConcurrency || c.Concurrency > subjects.MaxAllocConcurrency {
			return usagef("tms ops workers scale: --concurrency %d: want %d..%d", c.Concurrency, subjects.MinAllocConcurrency, subjects.MaxAllocConcurrency)
		}
		return nil
	case "dlq list":
		if err := noArgs(); err != nil {
			return err
		}
		if c.Limit < 1 || c.Limit > 10000 {
			return usagef("tms ops dlq list: --limit %d: want 1..10000", c.Limit)
		}
		return validTenant("--tenant")
	case "dlq show":
		if len(c.Args) != 1 {
			return usagef("tms ops dlq show: want one dead-letter sequence number (see tms ops dlq list)")
		}
		_, err := parseSeqs(c.Command, c.Args)
		return err
	case "dlq replay":
		if c.All == (len(c.Args) > 0) {
			return usagef("tms ops dlq replay: want sequence numbers or --all (not both)")
		}
		if c.Tenant != "" && !c.All {
			return usagef("tms ops dlq replay: --tenant goes with --all")
		}
		if _, err := parseSeqs(c.Command, c.Args); err != nil {
			return err
		}
		return validTenant("--tenant")
	case "tenants show":
		if len(c.Args) != 1 {
			return usagef("tms ops tenants show: want one tenant id")
		}
		if subjects.ValidID(c.Args[0]) != nil {
			return usagef("tms ops tenants show: %q is not a tenant id", c.Args[0])
		}
		return c.checkDatabaseURL()
	}
	return nil
}

// checkDatabaseURL refuses a --database-url tms could never connect with,
// as the other commands do.
func (c *opsConfig) checkDatabaseURL() error {
	cfg := config{DatabaseURL: c.DatabaseURL}
	if strings.TrimSpace(c.DatabaseURL) == "" {
		return usagef("tms ops %s: --database-url is empty: %s", c.Command, setHint("database-url"))
	}
	for _, u := range cfg.databaseURLs() {
		if err := checkDatabaseURL(u); err != nil {
			return usagef("tms ops %s: --database-url: %v (%s)", c.Command, err, setHint("database-url"))
		}
	}
	return nil
}

// parseSeqs reads dead-letter sequence numbers.
func parseSeqs(cmd string, args []string) ([]uint64, error) {
	var seqs []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, usagef("tms ops %s: %q is not a dead-letter sequence number (a whole number from 1; see tms ops dlq list)", cmd, a)
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}

// printOpsUsage is tms ops's help.
func printOpsUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: tms ops <subcommand> [flags] [arguments]

The operators' tool: it looks at a running tms through its NATS (and, for
tenants, the tenant databases) and changes what can be changed live.
docs/operations.md is the guide, with example output.

Subcommands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range opsCommands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Output: aligned tables for people, --json one JSON document on stdout for
programs. Passwords in URLs are never printed.
Exit codes: 0 done (status also when the system is degraded: it says so on
its first line), 1 it could not be done (NATS unreachable, --timeout, a
worker that did not apply a scale, a dead letter that cannot be replayed),
2 a bad subcommand, flag or argument.

Flags of every subcommand (also TMS_<NAME>; the command line wins):
`)
	var c opsConfig
	printFlags := func(fs *flag.FlagSet, only func(string) bool) {
		fs.VisitAll(func(f *flag.Flag) {
			if !only(f.Name) {
				return
			}
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			env := ""
			if opsEnvFlags[f.Name] {
				env = envName(f.Name) + ", "
			}
			fmt.Fprintf(w, "  --%s (%sdefault %s)\n      %s\n", f.Name, env, def, f.Usage)
		})
	}
	common := opsFlags(&c, "status")
	printFlags(common, func(string) bool { return true })
	for _, sub := range []string{"tenants list", "workers scale", "dlq list", "dlq replay"} {
		fmt.Fprintf(w, "\nFlags of %s:\n", sub)
		printFlags(opsFlags(&c, sub), func(n string) bool { return common.Lookup(n) == nil })
	}
}

// opsMain runs tms ops and returns its exit code.
func opsMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := loadOpsConfig(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tms: "+oneLine(err))
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := runOps(ctx, cfg, stdout); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (--timeout %s)", err, cfg.Timeout)
		}
		fmt.Fprintln(stderr, "tms ops "+cfg.Command+": "+oneLine(err))
		return 1
	}
	return 0
}

// opsClient is a connection to the tms's NATS.
type opsClient struct {
	cfg opsConfig
	nc  *nats.Conn
	js  jetstream.JetStream
}

func runOps(ctx context.Context, cfg opsConfig, out io.Writer) error {
	// Connecting logs nothing the operator asked for.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := ops.ConnectNATS(ctx, cfg.NATSURL, "tms ops", quiet, ops.NATSOptions{Flag: "--nats-url"})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("cannot connect to NATS at %s within --timeout %s (set --nats-url or TMS_NATS_URL)", ops.RedactURLs(cfg.NATSURL), cfg.Timeout)
		}
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	c := &opsClient{cfg: cfg, nc: nc, js: js}
	switch cfg.Command {
	case "status":
		return c.status(ctx, out)
	case "workers":
		return c.workersTable(ctx, out)
	case "workers scale":
		return c.scale(ctx, out)
	case "dlq list":
		return c.dlqList(ctx, out)
	case "dlq show":
		return c.dlqShow(ctx, out)
	case "dlq replay":
		return c.dlqReplay(ctx, out)
	case "tenants list":
		return c.tenantsList(ctx, out)
	case "tenants show":
		return c.tenantsShow(ctx, out)
	}
	return fmt.Errorf("unknown subcommand %q", cfg.Command)
}

// writeJSON prints the one JSON document of --json.
func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable is the kubectl-like aligned table of the human output.
func newTable(out io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(out, 0, 0, 3, ' ', 0) }

// ago is a duration for people: whole seconds, or less when short.
func ago(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
