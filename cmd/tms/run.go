package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"tms/ingress"
	"tms/ops"
	"tms/ops/embedded"
	"tms/tenants"
	"tms/workers"
)

// Bounds on start-up and shutdown steps, so that neither hangs.
const (
	pingTimeout    = 10 * time.Second
	connectTimeout = 10 * time.Second
	setupTimeout   = 30 * time.Second
	drainTimeout   = 10 * time.Second
)

// run starts the command cfg names and blocks until ctx is done (a
// signal) or a part fails. nil means a clean stop.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	logger.Info("starting tms", cfg.logAttrs()...)
	cfg.Failpoint.warn(logger)
	var err error
	switch cfg.Command {
	case "serve", "ingress", "worker":
		err = runRoles(ctx, cfg, logger)
	default:
		err = fmt.Errorf("unknown command %q", cfg.Command)
	}
	if err == nil {
		logger.Info("tms stopped")
	}
	return err
}

// roleSet says which parts a command runs: the front (HTTP listeners and
// the public NATS API) and the back (ETA responders and allocators).
// tms serve runs both.
type roleSet struct{ front, back bool }

func rolesOf(command string) roleSet {
	return roleSet{front: command != "worker", back: command != "ingress"}
}

// runRoles is every command: the checks that can fail on a misconfigured
// machine come first (data dir, ports, Postgres, NATS), each failing with
// one line naming the flag; then the parts run until ctx is done.
func runRoles(ctx context.Context, cfg config, logger *slog.Logger) error {
	r := rolesOf(cfg.Command)
	embed := cfg.Command == "serve" && cfg.NATSURL == ""
	if embed {
		if err := checkDataDir(cfg.DataDir); err != nil {
			return err
		}
	}
	var publicLn, internalLn net.Listener
	if r.front {
		var err error
		if publicLn, err = listen(ctx, cfg.HTTPAddr, "http-addr"); err != nil {
			return err
		}
		defer publicLn.Close()
		if internalLn, err = listen(ctx, cfg.InternalAddr, "internal-addr"); err != nil {
			return err
		}
		defer internalLn.Close()
	}

	prov, err := openPostgres(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer prov.Close()

	nc, stopNATS, err := connectNATS(ctx, cfg, logger, embed)
	if err != nil {
		return err
	}
	defer stopNATS()

	setupCtx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	p, err := newParts(setupCtx, cfg, r, logger, nc, prov)
	if err != nil {
		return err
	}

	front := stage{}
	if r.front {
		public := ingress.NewServer("public", publicLn, p.public, logger)
		internal := ingress.NewServer("internal", internalLn, p.internal, logger)
		front["public http"] = public.Run
		front["internal http"] = internal.Run
		front["nats api"] = p.natsAPI.Run
		logger.Info("listening", "public", publicLn.Addr().String(), "internal", internalLn.Addr().String())
	}
	back := stage{}
	if r.back {
		back["eta responder"] = p.responder.Run
		back["allocator"] = p.allocator.Run
		back["reconciler"] = p.reconciler.Run
	}
	base := stage{"tenant registry": p.registry.Run, "tenant pools": p.pools.Run}
	if r.front {
		base["sessions"] = p.sessions.Run
	}
	// Shutdown goes front to back: requests in flight still reach the
	// responders, and every part still has its caches and pools.
	return supervise(ctx, logger, front, back, base)
}

// parts are the long-lived pieces of a process; a role leaves the pieces
// it does not run nil.
type parts struct {
	registry *tenants.Registry
	pools    *tenants.Pools

	// front
	sessions *tenants.Sessions
	public   http.Handler
	internal http.Handler
	natsAPI  *ingress.NATSAPI

	// back
	responder  *workers.Responder
	allocator  *workers.Allocator
	reconciler *workers.Reconciler
}

func newParts(ctx context.Context, cfg config, r roleSet, logger *slog.Logger, nc *nats.Conn, prov *tenants.Provisioner) (*parts, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &parts{}
	// Only the front creates accounts, so only it provisions databases;
	// the back reads the registry to find each tenant's database.
	regProv := prov
	if !r.front {
		regProv = nil
	}
	p.registry, err = tenants.NewRegistry(ctx, tenants.RegistryConfig{
		JS: js, Provisioner: regProv, Logger: logger, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("tenant registry: %w", err)
	}
	p.pools = tenants.NewPools(tenants.PoolsConfig{Provisioner: prov, Logger: logger})
	tickets := tenants.NewTickets(p.pools, logger)
	metrics := ops.NewMetrics()
	// Postgres only degrades readiness: tickets are admitted in NATS and
	// land when it is back, so a load balancer must keep this process.
	checks := []ops.Check{ops.NATSConnected(nc), ops.Flag("tenant registry", p.registry.Ready), ops.PostgresReachable(prov.Ping)}

	if r.back {
		// The streams first, with this version's configuration, so that
		// tickets accepted from now on have a place to wait.
		if err := workers.EnsureStreams(ctx, js, cfg.Replicas); err != nil {
			return nil, fmt.Errorf("ticket streams: %w", err)
		}
		p.responder, err = workers.NewResponder(ctx, workers.ResponderConfig{
			NC: nc, JS: js, Registry: p.registry, Logger: logger,
			HoldTTL: cfg.HoldTTL, Replicas: cfg.Replicas, Metrics: metrics,
		})
		if err != nil {
			return nil, fmt.Errorf("eta responder: %w", err)
		}
		p.allocator, err = workers.NewAllocator(ctx, workers.AllocatorConfig{
			JS: js, Registry: p.registry, Tickets: tickets, Logger: logger,
			Replicas: cfg.Replicas, Metrics: metrics, AckWait: cfg.AckWait,
			BeforeCommit: cfg.Failpoint.hook("allocator.before_commit", logger),
			AfterCommit:  cfg.Failpoint.hook("allocator.after_commit", logger),
		})
		if err != nil {
			return nil, fmt.Errorf("allocator: %w", err)
		}
		// Releases reservations whose ticket never reached the stream (an
		// ingress that died between reserve and publish): within Grace +
		// Interval of the crash.
		p.reconciler, err = workers.NewReconciler(workers.ReconcilerConfig{
			JS: js, Registry: p.registry, Tickets: tickets, Logger: logger, Metrics: metrics,
			Grace: cfg.ReconcileGrace, Interval: cfg.ReconcileInterval,
		})
		if err != nil {
			return nil, fmt.Errorf("reconciler: %w", err)
		}
		checks = append(checks, ops.Flag("eta responder", p.responder.Ready))
	}
	if !r.front {
		return p, nil
	}

	p.sessions, err = tenants.NewSessions(ctx, tenants.SessionsConfig{JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	agents, err := tenants.NewAgents(ctx, tenants.AgentsConfig{Pools: p.pools, JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	hcfg := ingress.Config{
		Registry: p.registry, Sessions: p.sessions, Agents: agents, Logger: logger,
		NC: nc, JS: js, Tickets: tickets, Replicas: cfg.Replicas,
		Metrics: metrics, Gatherer: metrics,
		BeforePublish: cfg.Failpoint.hook("ingress.before_publish", logger),
	}
	// One set of bounds shared by both routers and the NATS API.
	oc := cfg.overloadConfig()
	oc.JS, oc.Metrics, oc.Logger = js, metrics, logger
	if hcfg.Overload, err = ingress.NewOverload(oc); err != nil {
		return nil, fmt.Errorf("overload: %w", err)
	}
	if p.natsAPI, err = ingress.NewNATSAPI(hcfg); err != nil {
		return nil, err
	}
	checks = append(checks, ops.Flag("sessions", p.sessions.Ready), ops.Flag("nats api", p.natsAPI.Ready))
	hcfg.Ready = ops.Readiness(checks...)
	if p.public, err = ingress.NewPublic(hcfg); err != nil {
		return nil, err
	}
	if p.internal, err = ingress.NewInternal(hcfg); err != nil {
		return nil, err
	}
	return p, nil
}

// stage is a set of long-running parts that stop together.
type stage map[string]func(context.Context) error

// supervise runs every stage's parts until ctx is done or one of them
// fails (an error, or a return before shutdown). Then it stops the stages
// one after the other, in the order given, each finishing its in-flight
// work before the next is told to stop: the front first, while the parts
// it depends on still run.
func supervise(ctx context.Context, logger *slog.Logger, stages ...stage) error {
	runCtx, shutdown := context.WithCancel(ctx)
	defer shutdown()
	type running struct {
		stop func()
		wait func() error
	}
	var all []running
	for _, st := range stages {
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		g := pool.New().WithErrors()
		for name, loop := range st {
			g.Go(func() error {
				err := loop(sctx)
				if err == nil && runCtx.Err() == nil {
					err = errStopped
				}
				if err != nil {
					logger.Error("part failed; shutting down", "part", name, "err", err)
					shutdown()
					return fmt.Errorf("%s: %w", name, err)
				}
				return nil
			})
		}
		all = append(all, running{stop: stop, wait: g.Wait})
	}
	<-runCtx.Done()
	logger.Info("shutting down")
	var errs []error
	for _, st := range all {
		st.stop()
		errs = append(errs, st.wait())
	}
	return errors.Join(errs...)
}

// checkDataDir creates the data dir if needed and proves it writable.
func checkDataDir(dir string) error {
	fail := func(err error) error {
		return startErrorf(errDataDir, err, "data dir %s is not writable: %v (%s)", dir, err, setHint("data-dir"))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, ".tms-probe-*")
	if err != nil {
		return fail(err)
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Remove(filepath.Clean(name)); err != nil {
		return fail(err)
	}
	return nil
}

func listen(ctx context.Context, addr, flagName string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, startErrorf(errListen, err, "cannot listen on --%s %s: %v (another process may hold it; %s)",
			flagName, addr, err, setHint(flagName))
	}
	return ln, nil
}

func openPostgres(ctx context.Context, cfg config, logger *slog.Logger) (*tenants.Provisioner, error) {
	prov, err := tenants.NewProvisioner(tenants.ProvisionerConfig{
		ServerURLs: cfg.databaseURLs(), DBPrefix: cfg.DBPrefix, Logger: logger,
	})
	if err != nil {
		return nil, startErrorf(errPostgres, err, "--database-url: %v (%s)", err, setHint("database-url"))
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := prov.Ping(pctx); err != nil {
		prov.Close()
		return nil, startErrorf(errPostgres, err,
			"PostgreSQL is not reachable: %v; start it (e.g. pg_ctlcluster --skip-systemctl-redirect 15 main start) or %s",
			err, setHint("database-url"))
	}
	return prov, nil
}

// connectNATS starts the embedded server (embed) or connects to
// --nats-url. stop drains the connection, then stops an embedded server.
func connectNATS(ctx context.Context, cfg config, logger *slog.Logger, embed bool) (*nats.Conn, func(), error) {
	if !embed {
		nc, err := ops.ConnectNATS(ctx, cfg.NATSURL, "tms "+cfg.Command, logger,
			ops.NATSOptions{ConnectTimeout: connectTimeout, Flag: "--nats-url or " + envName("nats-url")})
		if err != nil {
			return nil, nil, startErrorf(errNATS, err, "%v", err)
		}
		return nc, func() { drain(logger, nc) }, nil
	}
	host, portStr, _ := net.SplitHostPort(cfg.NATSListen) // validated with the config
	port, _ := strconv.Atoi(portStr)
	if port == 0 {
		port = -1 // random, as embedded.Config spells it
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	srv, err := embedded.Start(embedded.Config{Name: "tms", StoreDir: storeDir, Host: host, Port: port})
	if errors.Is(err, embedded.ErrAddrInUse) {
		return nil, nil, startErrorf(errNATS, err, "embedded NATS cannot listen on --nats-listen %s: %v (%s)",
			cfg.NATSListen, err, setHint("nats-listen"))
	}
	if err != nil {
		return nil, nil, startErrorf(errNATS, err, "embedded NATS: %v (%s)", err, setHint("data-dir"))
	}
	logger.Info("embedded NATS started", embedded.LogAttrs(srv)...)
	nc, err := ops.ConnectEmbedded(ctx, srv, "tms serve", logger)
	if err != nil {
		embedded.Stop(srv)
		return nil, nil, startErrorf(errNATS, err, "%v", err)
	}
	return nc, func() {
		drain(logger, nc)
		embedded.Stop(srv)
		logger.Info("embedded NATS stopped")
	}, nil
}

func drain(logger *slog.Logger, nc *nats.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := ops.Drain(ctx, nc); err != nil {
		logger.Warn("NATS drain incomplete", "err", err)
	}
}
