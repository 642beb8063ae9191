package ops

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewMetrics returns a fresh registry with the Go runtime and process
// collectors. Each process (and each test) owns its registry, so nothing
// registers into the global default one.
func NewMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Register registers c on reg, or returns the collector of the same type
// already registered under the same name: the listeners, responders and
// workers of one process (and a test building several) share one
// registry, so a second registration reuses the first's collector rather
// than being refused. Any other refusal is an error.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering metrics: %w", err)
	}
	return c, nil
}

// Registration is one collector for RegisterAll, made by Collector.
type Registration func(prometheus.Registerer) error

// Collector is the registration of the collector *c: Register's result,
// the registered collector of the same name or c's own, is stored back in
// *c.
func Collector[C prometheus.Collector](c *C) Registration {
	return func(reg prometheus.Registerer) error {
		got, err := Register(reg, *c)
		if err != nil {
			return err
		}
		*c = got
		return nil
	}
}

// RegisterAll registers each collector on reg in turn, as Register does,
// and stops at the first refusal:
//
//	err := ops.RegisterAll(reg, ops.Collector(&m.requests), ops.Collector(&m.errors))
func RegisterAll(reg prometheus.Registerer, cs ...Registration) error {
	for _, register := range cs {
		if err := register(reg); err != nil {
			return err
		}
	}
	return nil
}
