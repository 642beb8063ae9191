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
	"tms/ingress/admission"
	"tms/ops"
	"tms/ops/embedded"
	"tms/subjects"
	"tms/tenants"
	"tms/workers"
)

// Bounds on start-up and shutdown steps, so that neither hangs.
const (
	pingTimeout = 10 * time.Second
	// setupTimeout bounds one attempt at setting up the parts; a failed
	// attempt is retried while JetStream cannot answer yet.
	setupTimeout = 30 * time.Second
	drainTimeout = 10 * time.Second
)

// run starts the command cfg names and blocks until ctx is done (a
// signal) or a part fails. nil means a clean stop.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	logger.Info("starting tms", cfg.logAttrs()...)
	cfg.Failpoint.warn(logger)
	var err error
	if isCommand(cfg.Command) {
		err = runRoles(ctx, cfg, logger)
	} else {
		err = fmt.Errorf("unknown command %q", cfg.Command)
	}
	if err == nil {
		logger.Info("tms stopped")
	}
	return err
}

// runRoles is every command: the checks that can fail on a misconfigured
// machine come first (data dir, ports, Postgres), each failing with one
// line naming the flag; then the process waits for NATS and JetStream and
// sets up its parts, for as long as that takes (a cluster started at the
// same moment, as `docker compose up` does), while its listeners already
// answer /healthz and say on /readyz what it waits for; then the parts
// run until ctx is done. A signal while it waits is a clean stop.
func runRoles(ctx context.Context, cfg config, logger *slog.Logger) error {
	r := rolesOf(cfg.Command)
	embed := cfg.embedsNATS()
	if embed {
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		// Released last, after the embedded server has stopped writing.
		defer lock.Close()
	}
	stopPprof, err := startPprof(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer stopPprof()
	waiter := ops.NewWaiter(logger)
	var servers []*ingress.Server
	supervised := false
	defer func() {
		if supervised {
			return
		}
		for _, srv := range servers {
			if err := srv.Stop(context.WithoutCancel(ctx)); err != nil {
				logger.Warn("stopping a listener", "err", err)
			}
		}
	}()
	if r.has(roleFront) {
		for _, l := range []struct{ name, addr, flag string }{
			{"public", cfg.HTTPAddr, "http-addr"}, {"internal", cfg.InternalAddr, "internal-addr"},
		} {
			// Stop (deferred above) or Run closes it.
			ln, err := listen(ctx, l.addr, l.flag)
			if err != nil {
				return err
			}
			servers = append(servers, ingress.NewServer(l.name, ln, ingress.Starting(waiter.Waiting), logger))
		}
		for _, srv := range servers {
			srv.Start()
		}
		logger.Info("listening", "public", servers[0].Addr().String(), "internal", servers[1].Addr().String())
	}
	var opsServer *ingress.Server
	if r.has(roleOps) {
		ln, err := listen(ctx, cfg.OpsAddr, "ops-addr")
		if err != nil {
			return err
		}
		opsServer = ingress.NewServer("ops", ln, ingress.Starting(waiter.Waiting), logger)
		servers = append(servers, opsServer)
		opsServer.Start()
		logger.Info("listening", "ops", opsServer.Addr().String())
	}

	prov, err := openPostgres(ctx, cfg, logger)
	if err != nil {
		return stoppedOr(ctx, logger, err)
	}
	defer prov.Close()

	conns, stopNATS, err := connectNATS(ctx, cfg, logger, embed, waiter)
	if err != nil {
		return stoppedOr(ctx, logger, err)
	}
	defer stopNATS()

	// Every step of newParts is idempotent, so the whole of it is tried
	// again while JetStream cannot answer or another process is creating
	// the same bucket.
	var p *parts
	err = waiter.Retry(ctx, "JetStream", func(ctx context.Context) error {
		sctx, cancel := context.WithTimeout(ctx, setupTimeout)
		defer cancel()
		var err error
		p, err = newParts(sctx, cfg, r, logger, conns, prov)
		if err != nil {
			if denied := ops.PermissionDenied(conns.front, "--nats-url or "+envName("nats-url")); denied != nil {
				return denied
			}
		}
		return err
	})
	if err != nil {
		return stoppedOr(ctx, logger, setupError(err))
	}

	front := stage{}
	if r.has(roleFront) {
		servers[0].SetHandler(p.public)
		servers[1].SetHandler(p.internal)
		front["public http"] = servers[0].Run
		front["internal http"] = servers[1].Run
		front["nats api"] = p.natsAPI.Run
	}
	if opsServer != nil {
		opsServer.SetHandler(p.ops)
		front["ops http"] = opsServer.Run
	}
	back := stage{}
	if r.has(roleBack) {
		back["eta responder"] = p.responder.Run
		back["allocator"] = p.allocator.Run
	}
	listeners := []any{}
	for _, srv := range servers {
		listeners = append(listeners, slog.String(srv.Name(), srv.Addr().String()))
	}
	base := stage{"tenant registry": p.registry.Run, "tenant pools": p.pools.Run,
		"ready announcement": announceReady(cfg, r, p, logger, slog.Group("listeners", listeners...))}
	if r.has(roleFront) {
		base["sessions"] = p.sessions.Run
		base["agent revisions"] = p.agents.Run
		base["readiness probes"] = p.probes.Run
	}
	// Shutdown goes front to back: requests in flight still reach the
	// responders, and every part still has its caches and pools.
	supervised = true
	return supervise(ctx, logger, front, back, base)
}

// readyPoll is how often announceReady asks the readiness checks.
const readyPoll = 100 * time.Millisecond

// announceReady is a part that logs one summary line, "tms ready", the
// first time the process's readiness passes (degraded counts: Postgres
// down does not stop admissions): what runs, where it listens, which
// NATS, how many tenants, and how long the start took. Then it waits for
// the end.
func announceReady(cfg config, r roleSet, p *parts, logger *slog.Logger, listeners slog.Attr) func(ctx context.Context) error {
	began := time.Now()
	return func(ctx context.Context) error {
		tick := time.NewTicker(readyPoll)
		defer tick.Stop()
		for {
			cctx, cancel := context.WithTimeout(ctx, readyPoll*10)
			err := p.ready(cctx)
			cancel()
			var degraded *ops.DegradedError
			if err == nil || errors.As(err, &degraded) {
				nats, roles := cfg.NATSURL, r
				if cfg.embedsNATS() {
					nats = "embedded " + cfg.NATSListen
				} else {
					roles &^= roleEmbedded
				}
				attrs := []any{"command", cfg.Command, "roles", roles.String(), listeners, "nats", ops.RedactURLs(nats),
					"tenants", p.registry.Len(), "took", time.Since(began).Round(time.Millisecond)}
				if degraded != nil {
					attrs = append(attrs, "degraded", degraded.Error())
				}
				logger.Info("tms ready", attrs...)
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		<-ctx.Done()
		return nil
	}
}

// allocBatchWait is --alloc-batch-wait as AllocatorConfig takes it: 0
// there is the default, a negative wait is none.
func allocBatchWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// jsReplicasNotSupported is JetStream's answer to a stream with more
// replicas than a single server (not a cluster) can keep.
const jsReplicasNotSupported jetstream.ErrorCode = 10074

// setupError names the flag to change when NATS refused the configuration.
func setupError(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsReplicasNotSupported {
		return startErrorf(errNATS, err, "%v (a single NATS server keeps one replica: %s)", err, setHint("replicas"))
	}
	return err
}

// stoppedOr is err, unless ctx is done: a signal while the process was
// still starting (waiting for NATS) is a clean stop, not a failure.
func stoppedOr(ctx context.Context, logger *slog.Logger, err error) error {
	if ctx.Err() != nil {
		logger.Info("stopped while starting", "err", err)
		return nil
	}
	return err
}

// parts are the long-lived pieces of a process; a role leaves the pieces
// it does not run nil.
type parts struct {
	registry *tenants.Registry
	pools    *tenants.Pools

	// front
	sessions *tenants.Sessions
	agents   *tenants.Agents
	probes   *ops.Probes // readiness checks that cost a round trip
	public   http.Handler
	internal http.Handler
	natsAPI  *ingress.NATSAPI

	// a worker's operations listener (roleOps)
	ops http.Handler

	// ready is the process's readiness, as /readyz answers it.
	ready func(ctx context.Context) error

	// back
	responder *workers.Responder
	allocator *workers.Allocator
}

// natsConns are the NATS connections of a process: front carries the
// registry, sessions, agents, the NATS API and admission; back the ETA
// responders and allocators. They are one connection but in
// tms serve with the embedded server, where each is in-process (a
// synchronous pipe): two let the admissions' requests and the
// responders' replies pass each other instead of taking turns on one.
type natsConns struct{ front, back *nats.Conn }

func newParts(ctx context.Context, cfg config, r roleSet, logger *slog.Logger, conns natsConns, prov *tenants.Provisioner) (*parts, error) {
	nc := conns.front
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	backNC, backJS := nc, js
	if conns.back != nc {
		backNC = conns.back
		if backJS, err = jetstream.New(backNC); err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
	}
	p := &parts{}
	// Only the front creates accounts, so only it provisions databases;
	// the back reads the registry to find each tenant's database.
	regProv := prov
	if !r.has(roleFront) {
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
	if backNC != nc && r.has(roleBack) {
		checks = append(checks, ops.NATSConnected(backNC))
	}

	// The dead-letter stream first, with this version's configuration,
	// whichever role starts first; the responders and allocators open the
	// slot buckets.
	if err := workers.EnsureStreams(ctx, js, cfg.Replicas); err != nil {
		return nil, fmt.Errorf("ticket streams: %w", err)
	}
	if r.has(roleBack) {
		p.responder, err = workers.NewResponder(ctx, workers.ResponderConfig{
			NC: backNC, JS: backJS, Registry: p.registry, Logger: logger,
			HoldTTL: cfg.HoldTTL, Replicas: cfg.Replicas, Metrics: metrics, Frozen: cfg.Frozen,
		})
		if err != nil {
			return nil, fmt.Errorf("eta responder: %w", err)
		}
		p.allocator, err = workers.NewAllocator(ctx, workers.AllocatorConfig{
			JS: backJS, Registry: p.registry, Tickets: tickets, Logger: logger,
			Replicas: cfg.Replicas, Metrics: metrics, AckWait: cfg.AckWait,
			BatchSize: cfg.AllocBatch, BatchWait: allocBatchWait(cfg.AllocBatchWait), Concurrency: cfg.AllocConcurrency,
			Version: readBuildInfo().Version, Command: cfg.Command,
			BeforeCommit: cfg.Failpoint.hook("allocator.before_commit", logger),
			AfterCommit:  cfg.Failpoint.hook("allocator.after_commit", logger),
		})
		if err != nil {
			return nil, fmt.Errorf("allocator: %w", err)
		}
		checks = append(checks, ops.Flag("eta responder", p.responder.Ready))
	}
	if !r.has(roleFront) {
		p.ready = ops.Readiness(checks...)
		if r.has(roleOps) {
			p.ops, err = ingress.NewOps(ingress.Config{Logger: logger, Metrics: metrics, Gatherer: metrics, Ready: p.ready})
			if err != nil {
				return nil, err
			}
		}
		return p, nil
	}

	p.sessions, err = tenants.NewSessions(ctx, tenants.SessionsConfig{JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	p.agents, err = tenants.NewAgents(ctx, tenants.AgentsConfig{Pools: p.pools, JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	hcfg := ingress.Config{
		Registry: p.registry, Sessions: p.sessions, Agents: p.agents, Logger: logger,
		NC: nc, JS: js, Metrics: metrics, Gatherer: metrics,
	}
	// One set of bounds shared by both routers, the NATS API and the
	// admission service they all call.
	oc := cfg.overloadConfig()
	oc.JS, oc.Metrics, oc.Logger = js, metrics, logger
	if hcfg.Overload, err = ingress.NewOverload(oc); err != nil {
		return nil, fmt.Errorf("overload: %w", err)
	}
	hcfg.Admission, err = admission.New(admission.Config{
		NC: nc, JS: js, Tickets: tickets, Agents: p.agents, Replicas: cfg.Replicas, Logger: logger,
		AfterReserve: cfg.Failpoint.hook("ingress.after_reserve", logger), Gate: hcfg.Overload,
	})
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	if p.natsAPI, err = ingress.NewNATSAPI(hcfg); err != nil {
		return nil, err
	}
	checks = append(checks, ops.Flag("sessions", p.sessions.Ready), ops.Flag("nats api", isClosed(p.natsAPI.Started())))
	// Ready means an admission can succeed now: a responder answers, and
	// the streams of the slot buckets it writes have a leader.
	probes := []ops.Check{ops.ETAResponders(nc)}
	for i := range subjects.DefaultSlotShards {
		probes = append(probes, ops.StreamLeader(js, subjects.SlotStream(i)))
	}
	p.probes = ops.NewProbes(probes...)
	hcfg.Ready = ops.Readiness(append(checks, p.probes.Checks()...)...)
	p.ready = hcfg.Ready
	if p.public, err = ingress.NewPublic(hcfg); err != nil {
		return nil, err
	}
	if p.internal, err = ingress.NewInternal(hcfg); err != nil {
		return nil, err
	}
	return p, nil
}

// isClosed is a readiness flag of a part's Started channel.
func isClosed(started <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-started:
			return true
		default:
			return false
		}
	}
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

// lockDataDir checks the data dir and locks it for the life of the
// process, before anything touches the store: two embedded servers on one
// JetStream store would both write it and hand out one slot twice.
func lockDataDir(dir string) (*ops.DirLock, error) {
	if err := checkDataDir(dir); err != nil {
		return nil, err
	}
	lock, err := ops.LockDir(dir)
	var locked *ops.DirLockedError
	switch {
	case errors.As(err, &locked):
		holder := "another tms process"
		if locked.PID > 0 {
			holder += fmt.Sprintf(" (pid %d)", locked.PID)
		}
		return nil, startErrorf(errDataDirLocked, err,
			"data dir %s is in use by %s; stop it, or give this one its own --data-dir (%s)",
			dir, holder, setHint("data-dir"))
	case err != nil:
		return nil, startErrorf(errDataDir, err, "data dir %s cannot be locked: %v (%s)", dir, err, setHint("data-dir"))
	}
	return lock, nil
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
		if errors.Is(err, tenants.ErrPostgresRefused) {
			// Up, but not for this role or database: "start it" would
			// send the operator the wrong way.
			return nil, startErrorf(errPostgres, err,
				"PostgreSQL refused tms: %v (%s)",
				err, setHint("database-url"))
		}
		return nil, startErrorf(errPostgres, err,
			"PostgreSQL is not reachable: %v; start it (e.g. pg_ctlcluster --skip-systemctl-redirect 15 main start) or %s",
			err, setHint("database-url"))
	}
	return prov, nil
}

// connectNATS starts the embedded server (embed) or connects to
// --nats-url, waiting until it and JetStream answer. stop drains the
// connections, then stops an embedded server.
func connectNATS(ctx context.Context, cfg config, logger *slog.Logger, embed bool, waiter *ops.Waiter) (natsConns, func(), error) {
	if !embed {
		// No bound but the signal: NATS may come up after this process.
		nc, err := ops.ConnectNATS(ctx, cfg.NATSURL, "tms "+cfg.Command, logger,
			ops.NATSOptions{Flag: "--nats-url or " + envName("nats-url"), Waiter: waiter})
		if err != nil {
			return natsConns{}, nil, startErrorf(errNATS, err, "%v", err)
		}
		return natsConns{front: nc, back: nc}, func() { drain(logger, nc) }, nil
	}
	host, portStr, _ := net.SplitHostPort(cfg.NATSListen) // validated with the config
	port, _ := strconv.Atoi(portStr)
	if port == 0 {
		port = -1 // random, as embedded.Config spells it
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	srv, err := embedded.Start(embedded.Config{Name: "tms", StoreDir: storeDir, Host: host, Port: port})
	if errors.Is(err, embedded.ErrAddrInUse) {
		return natsConns{}, nil, startErrorf(errNATS, err, "embedded NATS cannot listen on --nats-listen %s: %v (%s)",
			cfg.NATSListen, err, setHint("nats-listen"))
	}
	if err != nil {
		return natsConns{}, nil, startErrorf(errNATS, err, "embedded NATS: %v (%s)", err, setHint("data-dir"))
	}
	logger.Info("embedded NATS started", embedded.LogAttrs(srv)...)
	// In-process, without a socket: the TCP port is for other processes.
	nc, err := ops.ConnectEmbedded(ctx, srv, "tms serve", logger)
	if err != nil {
		embedded.Stop(srv)
		return natsConns{}, nil, startErrorf(errNATS, err, "%v", err)
	}
	back, err := ops.ConnectEmbedded(ctx, srv, "tms serve workers", logger)
	if err != nil {
		drain(logger, nc)
		embedded.Stop(srv)
		return natsConns{}, nil, startErrorf(errNATS, err, "%v", err)
	}
	return natsConns{front: nc, back: back}, func() {
		drain(logger, nc)
		drain(logger, back)
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
