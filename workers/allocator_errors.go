package workers

import "errors"

// Errors of the allocator workers. They live here until the package's
// errors.go exists; then they move there.
var (
	// ErrAllocatorConfig: NewAllocator was given an unusable config.
	ErrAllocatorConfig = errors.New("allocator config")
	// ErrInvalidEvent: a ticket event that no worker could ever write
	// (bad JSON, unknown fields, fields that disagree with the subject or
	// the SLA rules). It is dead-lettered.
	ErrInvalidEvent = errors.New("invalid ticket event")
)
