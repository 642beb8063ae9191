package main

import (
	"errors"
	"fmt"
)

// Start-up failures an operator fixes by changing one setting: the message
// names the flag and its variable.
var (
	errDataDir       = errors.New("data dir not writable")
	errDataDirLocked = errors.New("data dir in use by another process")
	errListen        = errors.New("cannot listen")
	errPostgres      = errors.New("PostgreSQL not usable")
	errNATS          = errors.New("NATS not usable")
	errStopped       = errors.New("stopped unexpectedly")
)

// startError is a start-up failure whose text is written in full for the
// operator; errors.Is matches its kind and the cause.
type startError struct {
	kind  error
	cause error
	msg   string
}

func (e *startError) Error() string   { return e.msg }
func (e *startError) Unwrap() []error { return []error{e.kind, e.cause} }

func startErrorf(kind, cause error, format string, args ...any) error {
	return &startError{kind: kind, cause: cause, msg: fmt.Sprintf(format, args...)}
}
