package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MinServerVersion is the oldest nats-server tms runs against: per-key TTL
// in KV buckets (sessions, pending holds) arrived in 2.11.
const MinServerVersion = "2.11.0"

// NATSOptions tunes ConnectNATS; the zero value is what the commands use.
type NATSOptions struct {
	// ConnectTimeout bounds the whole wait for the server and JetStream;
	// 0 waits for as long as ctx lasts (until a signal, for the commands).
	ConnectTimeout time.Duration
	// Flag names the setting an operator changes, for error messages
	// ("--nats-url"); empty leaves it out.
	Flag string
	// Waiter retries the connection and the JetStream check and says what
	// they wait for; nil: one of its own.
	Waiter *Waiter
}

// jsCheckTimeout bounds one JetStream account info request: a cluster
// electing its meta leader leaves it unanswered, so a short one lets the
// wait notice the leader soon after it is there.
const jsCheckTimeout = 2 * time.Second

// ConnectNATS connects to an external server or cluster. urls is a
// comma-separated list. While no server answers, or JetStream does not
// answer yet (a cluster still forming), it retries with back-off, logging
// what it waits for, until ctx is done or o.ConnectTimeout passes. Once
// connected, the client reconnects forever. It gives up at once on what
// no wait changes: a malformed URL, refused credentials, a server older
// than MinServerVersion or without JetStream for this account; the
// one-line error says why.
func ConnectNATS(ctx context.Context, urls, name string, logger *slog.Logger, o NATSOptions) (*nats.Conn, error) {
	if strings.TrimSpace(urls) == "" {
		return nil, errorf(ErrNATSUnreachable, "no NATS URL given%s", flagHint(o.Flag))
	}
	if o.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.ConnectTimeout)
		defer cancel()
	}
	w := o.Waiter
	if w == nil {
		w = NewWaiter(logger)
	}
	opts := append(connOptions(name, logger), nats.Timeout(2*time.Second))
	var nc *nats.Conn
	err := w.Retry(ctx, "NATS", func(context.Context) error {
		var err error
		nc, err = nats.Connect(urls, opts...)
		var uerr *url.Error
		switch {
		case err == nil:
			return nil
		case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
			errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
			return errorf(ErrNATSAuth, "NATS at %s refused the credentials: %v%s", RedactURLs(urls), err, flagHint(o.Flag))
		case errors.As(err, &uerr):
			// uerr's own text repeats the URL, password and all.
			return fmt.Errorf("NATS URL %s: %v%s", RedactURLs(urls), uerr.Err, flagHint(o.Flag))
		}
		return errorf(ErrNATSUnreachable, "cannot connect to NATS at %s: %v%s", RedactURLs(urls), err, flagHint(o.Flag))
	})
	if err != nil {
		if o.ConnectTimeout > 0 && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, errorf(ErrNATSUnreachable, "cannot connect to NATS at %s within %s%s",
				RedactURLs(urls), o.ConnectTimeout, flagHint(o.Flag))
		}
		return nil, err
	}
	if err := CheckServer(ctx, nc, o.Flag); err != nil {
		nc.Close()
		return nil, err
	}
	logger.Info("connected to NATS", "nats_url", nc.ConnectedUrlRedacted(),
		"nats_server", nc.ConnectedServerName(), "nats_version", nc.ConnectedServerVersion())
	if err := waitJetStream(ctx, nc, w, o.Flag); err != nil {
		nc.Close()
		if o.ConnectTimeout > 0 && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, errorf(ErrNATSUnreachable, "JetStream at %s did not answer within %s%s",
				nc.ConnectedUrlRedacted(), o.ConnectTimeout, flagHint(o.Flag))
		}
		return nil, err
	}
	return nc, nil
}

// ConnectEmbedded connects to a server running in this process without a
// socket. The embedded server is always new enough; the check still runs so
// that a server started without JetStream fails here, not on first use.
func ConnectEmbedded(ctx context.Context, srv *server.Server, name string, logger *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect("", append(connOptions(name, logger), nats.InProcessServer(srv))...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	if err := CheckServer(ctx, nc, ""); err != nil {
		nc.Close()
		return nil, err
	}
	if err := waitJetStream(ctx, nc, NewWaiter(logger), ""); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// CheckServer refuses a server older than MinServerVersion or one that
// says it runs without JetStream.
func CheckServer(ctx context.Context, nc *nats.Conn, flag string) error {
	addr := nc.ConnectedUrlRedacted()
	version := nc.ConnectedServerVersion()
	if err := checkVersion(version); err != nil {
		return errorf(ErrNATSTooOld, "NATS server at %s is v%s; tms needs %s or newer for per-key TTL%s",
			addr, version, strings.TrimSuffix(MinServerVersion, ".0"), flagHint(flag))
	}
	if on, _ := nc.ConnectedServerJetStream(); !on {
		return errorf(ErrNoJetStream, "NATS server at %s (v%s) runs without JetStream; start it with -js%s",
			addr, version, flagHint(flag))
	}
	return nil
}

// waitJetStream waits until JetStream answers for this connection's
// account: a cluster answers only once it has elected a meta leader. An
// account without JetStream is refused at once.
func waitJetStream(ctx context.Context, nc *nats.Conn, w *Waiter, flag string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	addr := nc.ConnectedUrlRedacted()
	return w.Retry(ctx, "JetStream", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, jsCheckTimeout)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
			return errorf(ErrNoJetStream, "NATS server at %s: %v%s", addr, err, flagHint(flag))
		}
		if denied := PermissionDenied(nc, flag); denied != nil {
			return denied
		}
		return fmt.Errorf("JetStream account info from %s: %w", addr, err)
	})
}

// PermissionDenied is the permissions violation the server last reported
// on nc, as a configuration error (ErrNATSAuth), or nil. A request to a
// subject the user may not publish to gets no answer, only an
// asynchronous error, so without this a start-up wait would see nothing
// but timeouts and never end.
func PermissionDenied(nc *nats.Conn, flag string) error {
	err := nc.LastError()
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	return errorf(ErrNATSAuth, "NATS at %s does not let this user do what tms needs: %v%s",
		nc.ConnectedUrlRedacted(), err, flagHint(flag))
}

// Drain drains nc (subscriptions, then pending publishes) and waits until it
// is closed or ctx is done, when it closes it outright.
func Drain(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if err := nc.Drain(); err != nil {
		nc.Close()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("drain NATS connection: %w", ctx.Err())
	}
}

func connOptions(name string, logger *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DrainTimeout(10 * time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS reconnected", "nats_url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			logger.Error("NATS async error", attrs...)
		}),
	}
}

// checkVersion reports whether v ("2.10.22", "v2.11.0-beta.1") is at least
// MinServerVersion. A pre-release of the minimum counts as the minimum.
func checkVersion(v string) error {
	have, err := parseVersion(v)
	if err != nil {
		return err
	}
	want, _ := parseVersion(MinServerVersion)
	for i := range have {
		if have[i] != want[i] {
			if have[i] < want[i] {
				return fmt.Errorf("version %s < %s", v, MinServerVersion)
			}
			return nil
		}
	}
	return nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("version %q: want major.minor.patch", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, fmt.Errorf("version %q: want major.minor.patch", v)
		}
		out[i] = n
	}
	return out, nil
}

func flagHint(flag string) string {
	if flag == "" {
		return ""
	}
	return " (" + flag + ")"
}

// RedactURLs masks the password of every URL in a comma-separated list,
// for logs and error messages.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = RedactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// RedactURL masks the password in one URL; a string that does not parse
// as a URL is returned with everything before an '@' masked.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "xxxxx" + raw[i:]
		}
		return raw
	}
	return u.Redacted()
}
