package workers

import "errors"

// Errors of the reconciler.
var (
	// ErrReconcilerConfig: NewReconciler was given an unusable config.
	ErrReconcilerConfig = errors.New("reconciler config")
	// ErrUndecided: the reconciler could not tell whether a reservation is
	// an orphan (NATS or the tenant database did not answer, or answered
	// something it cannot read); it leaves the reservation alone.
	ErrUndecided = errors.New("cannot tell whether the reservation is an orphan")
)
