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
	var err error
	switch cfg.Command {
	case "serve", "ingress":
		err = runAPI(ctx, cfg, logger)
	case "worker":
		err = runWorker(ctx, cfg, logger)
	default:
		err = fmt.Errorf("unknown command %q", cfg.Command)
	}
	if err == nil {
		logger.Info("tms stopped")
	}
	return err
}

// runAPI is `tms serve` and `tms ingress`: the checks that can fail on a
// misconfigured machine come first (data dir, ports, Postgres, NATS), each
// failing with one line naming the flag; then the tenant registry, the
// sessions, the agents and the two HTTP listeners run until ctx is done.
func runAPI(ctx context.Context, cfg config, logger *slog.Logger) error {
	embed := cfg.Command == "serve" && cfg.NATSURL == ""
	if embed {
		if err := checkDataDir(cfg.DataDir); err != nil {
			return err
		}
	}
	publicLn, err := listen(ctx, cfg.HTTPAddr, "http-addr")
	if err != nil {
		return err
	}
	defer publicLn.Close()
	internalLn, err := listen(ctx, cfg.InternalAddr, "internal-addr")
	if err != nil {
		return err
	}
	defer internalLn.Close()

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
	parts, err := newParts(setupCtx, cfg, logger, nc, prov)
	if err != nil {
		return err
	}

	public := ingress.NewServer("public", publicLn, parts.public, logger)
	internal := ingress.NewServer("internal", internalLn, parts.internal, logger)
	logger.Info("listening", "public", publicLn.Addr().String(), "internal", internalLn.Addr().String())
	return supervise(ctx, logger,
		map[string]func(context.Context) error{
			"tenant registry": parts.registry.Run,
			"sessions":        parts.sessions.Run,
			"tenant pools":    parts.pools.Run,
		},
		public.Run, internal.Run)
}

// parts are the long-lived pieces of an API process.
type parts struct {
	registry *tenants.Registry
	sessions *tenants.Sessions
	pools    *tenants.Pools
	public   http.Handler
	internal http.Handler
}

func newParts(ctx context.Context, cfg config, logger *slog.Logger, nc *nats.Conn, prov *tenants.Provisioner) (*parts, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	registry, err := tenants.NewRegistry(ctx, tenants.RegistryConfig{
		JS: js, Provisioner: prov, Logger: logger, Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("tenant registry: %w", err)
	}
	sessions, err := tenants.NewSessions(ctx, tenants.SessionsConfig{JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	pools := tenants.NewPools(tenants.PoolsConfig{Provisioner: prov, Logger: logger})
	agents, err := tenants.NewAgents(ctx, tenants.AgentsConfig{Pools: pools, JS: js, Logger: logger, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	metrics := ops.NewMetrics()
	hcfg := ingress.Config{
		Registry: registry, Sessions: sessions, Agents: agents, Logger: logger,
		Metrics: metrics, Gatherer: metrics,
		Ready: ops.Readiness(
			ops.NATSConnected(nc),
			ops.Flag("tenant registry", registry.Ready),
			ops.Flag("sessions", sessions.Ready),
		),
	}
	public, err := ingress.NewPublic(hcfg)
	if err != nil {
		return nil, err
	}
	internal, err := ingress.NewInternal(hcfg)
	if err != nil {
		return nil, err
	}
	return &parts{registry: registry, sessions: sessions, pools: pools, public: public, internal: internal}, nil
}

// supervise runs the background loops and the front (HTTP) loops until ctx
// is done or one of them fails. Shutdown is in two steps: the front loops
// stop accepting and finish in-flight requests first, while the loops they
// depend on (caches, pools) still run; then the background loops stop.
func supervise(ctx context.Context, logger *slog.Logger, background map[string]func(context.Context) error,
	front ...func(context.Context) error) error {
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()

	bg := pool.New().WithErrors().WithContext(bgCtx)
	for name, loop := range background {
		bg.Go(func(ctx context.Context) error {
			err := loop(ctx)
			if err == nil && runCtx.Err() == nil {
				err = errStopped
			}
			if err != nil {
				logger.Error("part failed; shutting down", "part", name, "err", err)
				cancelRun()
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	fg := pool.New().WithErrors().WithContext(runCtx).WithCancelOnError()
	for _, loop := range front {
		fg.Go(func(ctx context.Context) error {
			err := loop(ctx)
			if err != nil {
				cancelRun()
			}
			return err
		})
	}
	fgErr := fg.Wait()
	logger.Info("shutting down")
	stopBackground()
	return errors.Join(fgErr, bg.Wait())
}

// runWorker is `tms worker`. Until ticket admission lands there is nothing
// to consume: it proves the NATS cluster is usable and waits for a signal.
func runWorker(ctx context.Context, cfg config, logger *slog.Logger) error {
	nc, stop, err := connectNATS(ctx, cfg, logger, false)
	if err != nil {
		return err
	}
	defer stop()
	logger.Info("worker connected; the allocator workers arrive with ticket admission, waiting for a signal")
	<-ctx.Done()
	if !nc.IsConnected() {
		logger.Warn("NATS was not connected at shutdown", "status", nc.Status().String())
	}
	return nil
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
