// Package main is the tms command, the ticket management service: `tms serve` runs every
// part in one process with an embedded NATS server; `tms ingress` and
// `tms worker` run one role each against an external NATS cluster;
// `tms bench` is a load generator against a running one.
// Run `tms help` for the commands and flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"tms/ops"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// realMain loads the configuration, builds the logger and calls run; it
// turns the outcome into an exit code: 0 on a clean stop or help, 1 when
// the service cannot start or fails, 2 for bad flags or variables. tms
// bench, a client of the service, has its own flags (bench.go).
func realMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "bench" {
		return benchMain(args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "ops" {
		return opsMain(args[1:], getenv, stdout, stderr)
	}
	cfg, err := loadConfig(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tms: "+oneLine(err))
		return 2
	}
	logger, err := ops.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(stderr, "tms: "+oneLine(err))
		return 2
	}

	ctx, stop := signalContext()
	defer stop()

	if err := run(ctx, cfg, logger); err != nil {
		fmt.Fprintln(stderr, "tms: "+oneLine(err))
		return 1
	}
	return 0
}

// oneLine keeps a fatal error to one line on stderr, whatever it wraps.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// signalContext is done at the first SIGTERM or SIGINT; a second one
// then ends the process at once (the default behaviour) instead of
// waiting for the shutdown or clean-up the first one started.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}
