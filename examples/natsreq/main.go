// Package main is the natsreq command: it sends one request to the tms
// NATS API and prints the reply, as a service on the NATS network would
// call tms without HTTP (README, "NATS subjects for services that publish
// directly"):
//
//	go run ./examples/natsreq [-s nats://127.0.0.1:4223] [-H 'Idempotency-Key: order-4713'] SUBJECT BODY
//
// SUBJECT is tms.api.<client_id>.<op>; BODY the JSON request body. The
// reply, the HTTP answer's JSON plus "code", goes to stdout. Exit code 1
// when no tms answers (no responders, timeout) or the flags are wrong.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// headers collects repeated -H 'Name: value' flags.
type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "natsreq:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("natsreq", flag.ContinueOnError)
	server := fs.String("s", "nats://127.0.0.1:4223", "NATS server URL (tms serve's --nats-listen)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the connection and for the reply")
	var hdrs headers
	fs.Var(&hdrs, "H", "a request header 'Name: value' (repeatable), e.g. 'Idempotency-Key: order-4713'")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("want SUBJECT BODY, e.g. tms.api.<client_id>.create_ticket '{\"client_id\":\"<client_id>\",\"ticket_type\":\"GOLD\"}'")
	}
	msg := nats.NewMsg(fs.Arg(0))
	msg.Data = []byte(fs.Arg(1))
	for _, h := range hdrs {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("-H %q: want 'Name: value'", h)
		}
		msg.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}

	nc, err := nats.Connect(*server, nats.Name("natsreq"), nats.Timeout(*timeout))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *server, err)
	}
	defer nc.Close()
	reply, err := nc.RequestMsg(msg, *timeout)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%s: no tms serve or tms ingress is listening on this NATS", msg.Subject)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", msg.Subject, err)
	}
	fmt.Println(strings.TrimRight(string(reply.Data), "\n"))
	return nil
}
