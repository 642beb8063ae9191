// Package main is the events command: a minimal subscriber of one
// tenant's ticket lifecycle events, as a service on the NATS network
// would follow its tickets instead of polling GET /tickets/{id} (README,
// "Events"; docs/api.md, "Events"):
//
//	go run ./examples/events [-s nats://127.0.0.1:4223] [-user U -password P | -creds FILE] [-n N] CLIENT_ID
//
// It subscribes to tms.events.<CLIENT_ID>.* and writes each event (an
// accepted, allocated, moved, at_risk or cancelled ticket) to stdout, one
// JSON object a line, after checking it strictly (subjects.DecodeEvent):
// whoever may publish on the subject can send anything, so a body that
// does not decode, or names another tenant or kind than its subject, is
// reported on stderr and skipped. With -n it exits after N events; else
// on SIGINT or SIGTERM. Events are notifications: one can repeat or be
// lost (nothing is kept for a subscriber away), and the ticket's GET
// stays the truth.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"tms/subjects"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("s", "nats://127.0.0.1:4223", "NATS server URL (tms serve's --nats-listen)")
	user := fs.String("user", "", "NATS user (of the tenant's account, README \"Events\")")
	password := fs.String("password", "", "NATS password of -user")
	creds := fs.String("creds", "", "NATS credentials file, instead of -user and -password")
	n := fs.Int("n", 0, "exit after this many events (0: until interrupted)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("want CLIENT_ID, the tenant whose events to follow")
	}
	tenant := fs.Arg(0)
	if err := subjects.ValidID(tenant); err != nil {
		return fmt.Errorf("client id %q: %w", tenant, err)
	}
	if *n < 0 {
		return fmt.Errorf("-n %d: want 0 or more", *n)
	}
	opts := []nats.Option{nats.Name("tms-events-example"), nats.Timeout(*timeout), nats.MaxReconnects(-1)}
	switch {
	case *creds != "":
		opts = append(opts, nats.UserCredentials(*creds))
	case *user != "":
		opts = append(opts, nats.UserInfo(*user, *password))
	}
	nc, err := nats.Connect(*server, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", *server, err)
	}
	defer nc.Close()

	// A bounded buffer: a subscriber slower than its events loses some
	// (the server drops them for a slow consumer), as any core NATS one.
	msgs := make(chan *nats.Msg, 1024)
	subject := subjects.TenantEvents(tenant)
	sub, err := nc.ChanSubscribe(subject, msgs)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription is known to the server once the flush returns:
	// events from then on are delivered.
	if err := nc.FlushTimeout(*timeout); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	fmt.Fprintln(stderr, "subscribed to", subject)

	for seen := 0; *n == 0 || seen < *n; {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			ev, err := subjects.DecodeEvent(m.Subject, m.Data)
			if err != nil {
				fmt.Fprintf(stderr, "skipped a message on %s: %v\n", m.Subject, err)
				continue
			}
			line, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(line))
			seen++
		}
	}
	return nil
}
