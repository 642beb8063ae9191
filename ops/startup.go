package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Back-off between two attempts of a start-up step: from the first to the
// cap, doubling, each with up to a fifth of jitter so that processes
// started together do not retry in step.
const (
	firstRetryWait = 100 * time.Millisecond
	maxRetryWait   = 5 * time.Second
)

// Waiter runs the start-up steps that depend on NATS (connect, JetStream,
// creating buckets and streams) until they succeed, for as long as the
// context lasts: a process started together with its NATS cluster, as
// `docker compose up` does, waits for it rather than exiting. A step is
// retried only while its error says NATS cannot answer yet (Waitable);
// a configuration error ends the wait at once. Waiting says what the
// process is waiting for, for /readyz.
type Waiter struct {
	log     *slog.Logger
	waiting atomic.Pointer[string]
}

// NewWaiter returns a Waiter that logs each failed attempt at warn.
func NewWaiter(logger *slog.Logger) *Waiter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Waiter{log: logger}
}

// Waiting is what the process waits for now and why, "" when it waits
// for nothing.
func (w *Waiter) Waiting() string {
	if s := w.waiting.Load(); s != nil {
		return *s
	}
	return ""
}

// Retry runs step until it returns nil (then nil), an error that is not
// Waitable (that error), or ctx is done (an error wrapping ctx.Err()).
// Each failed attempt is logged as "waiting for <what>" with the attempt
// number, the error and the wait before the next one.
func (w *Waiter) Retry(ctx context.Context, what string, step func(ctx context.Context) error) error {
	wait := firstRetryWait
	for attempt := 1; ; attempt++ {
		err := step(ctx)
		if err == nil {
			if attempt > 1 {
				w.log.Info(what+" ready", slog.Int("attempts", attempt))
			}
			w.waiting.Store(nil)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		if !Waitable(err) {
			return err
		}
		line := "waiting for " + what + ": " + strings.ReplaceAll(err.Error(), "\n", "; ")
		w.waiting.Store(&line)
		d := wait + rand.N(wait/5+1)
		w.log.Warn("waiting for "+what, slog.Int("attempt", attempt), slog.Duration("retry_in", d.Round(time.Millisecond)),
			slog.Any("err", err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// waitableErrors are the errors of a NATS server or cluster that cannot
// answer yet or of another process creating the same stream at the same
// moment: starting, electing its JetStream meta leader (requests go
// unanswered until the deadline), placing replicas on peers it does not
// know yet, a create that lost the race to another process's create (the
// stream now exists: the next attempt opens it).
var waitableErrors = []error{
	ErrNATSUnreachable,
	context.DeadlineExceeded,
	nats.ErrTimeout,
	nats.ErrNoResponders,
	nats.ErrNoServers,
	nats.ErrConnectionReconnecting,
	nats.ErrDisconnected,
	jetstream.ErrBucketExists,
	jetstream.ErrBucketNotFound,
	jetstream.ErrStreamNameAlreadyInUse,
	jetstream.ErrStreamNotFound,
	jetstream.ErrConsumerNotFound,
	jetstream.ErrConsumerExists,
}

// waitableAPIErrors are JetStream answers with a 4xx status that mean
// "not yet" or "another process got there first" rather than "never".
var waitableAPIErrors = map[jetstream.ErrorCode]bool{
	10005:                                    true, // no suitable peers for placement: peers not all known yet
	jetstream.JSErrCodeStreamNameInUse:       true,
	jetstream.JSErrCodeStreamNotFound:        true,
	jetstream.JSErrCodeConsumerNameExists:    true,
	jetstream.JSErrCodeConsumerAlreadyExists: true,
	jetstream.JSErrCodeConsumerExists:        true,
	jetstream.JSErrCodeConsumerNotFound:      true,
	jetstream.JSErrCodeConsumerDoesNotExist:  true,
	jetstream.JSErrCodeJetStreamNotEnabled:   true, // no responders yet: ConnectNATS checked the server has JetStream
}

// permanentAPIErrors are JetStream answers with a 5xx status that no wait
// changes: the account has no JetStream, or the configuration asks for
// what the server cannot do.
var permanentAPIErrors = map[jetstream.ErrorCode]bool{
	jetstream.JSErrCodeJetStreamNotEnabledForAccount: true,
	10074: true, // replicas > 1 not supported in non-clustered mode
	10052: true, // invalid stream configuration
}

// Waitable reports whether err, from a start-up step, means that NATS or
// JetStream cannot answer yet, so that the step is worth another attempt.
// Configuration errors are not: a server too old or without JetStream,
// credentials refused, a malformed URL, an invalid stream configuration,
// or any error that did not come from NATS.
func Waitable(err error) bool {
	switch {
	case err == nil, errors.Is(err, ErrNATSTooOld), errors.Is(err, ErrNoJetStream), errors.Is(err, ErrNATSAuth),
		errors.Is(err, context.Canceled):
		return false
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		if api.Code >= 500 || api.Code == 408 {
			return !permanentAPIErrors[api.ErrorCode]
		}
		return waitableAPIErrors[api.ErrorCode]
	}
	for _, w := range waitableErrors {
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}
