package ops

import (
	"errors"
	"fmt"
)

var (
	// ErrBadLogConfig reports an unknown log level or format.
	ErrBadLogConfig = errors.New("bad log configuration")
	// ErrNATSUnreachable reports that no NATS server answered (yet).
	ErrNATSUnreachable = errors.New("NATS server not reachable")
	// ErrNATSAuth reports that the NATS server refused the credentials.
	ErrNATSAuth = errors.New("NATS credentials refused")
	// ErrNATSTooOld reports a NATS server older than MinServerVersion.
	ErrNATSTooOld = errors.New("NATS server too old")
	// ErrNoJetStream reports a NATS server (or account) without JetStream.
	ErrNoJetStream = errors.New("JetStream not enabled")
	// ErrDirLocked reports a directory locked by another process
	// (DirLockedError).
	ErrDirLocked = errors.New("directory locked by another process")
	// ErrNotReady is wrapped by the error of a failing readiness check.
	ErrNotReady = errors.New("not ready")
	// ErrDegraded is wrapped by the error of readiness checks that failed
	// but only degrade the process (DegradedError).
	ErrDegraded = errors.New("degraded")
)

// kindError is an error whose text is written for an operator in full,
// while errors.Is still matches its sentinel kind.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
