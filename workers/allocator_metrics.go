package workers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
)

// allocatorMetrics are the allocator's Prometheus collectors; a nil
// *allocatorMetrics records nothing.
type allocatorMetrics struct {
	processedTotal    *prometheus.CounterVec
	failedTotal       *prometheus.CounterVec
	deadLetteredTotal *prometheus.CounterVec
	handleSeconds     *prometheus.HistogramVec
}

func newAllocatorMetrics(reg prometheus.Registerer) (*allocatorMetrics, error) {
	m := &allocatorMetrics{
		processedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_processed_total",
			Help: "Slot records handled and acked, by record: created and cancelled (a ticket's, written into its tenant database), held and freed (nothing to write).",
		}, []string{"event"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_failed_total",
			Help: "Slot record deliveries given back for redelivery, by reason (unavailable, conflict, registry, error, dead_letter_publish).",
		}, []string{"reason"}),
		deadLetteredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_dead_lettered_total",
			Help: "Slot records parked on the dead-letter stream, by kind (invalid, unknown_tenant, double_booking, error).",
		}, []string{"kind"}),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tms_allocator_handle_seconds",
			Help:    "Time to handle one slot record delivery, by record (created, cancelled, held, freed, invalid).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"event"}),
	}
	if err := ops.RegisterAll(reg, ops.Collector(&m.processedTotal), ops.Collector(&m.failedTotal),
		ops.Collector(&m.deadLetteredTotal), ops.Collector(&m.handleSeconds)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *allocatorMetrics) processed(event string) {
	if m != nil {
		m.processedTotal.WithLabelValues(event).Inc()
	}
}

func (m *allocatorMetrics) failed(reason string) {
	if m != nil {
		m.failedTotal.WithLabelValues(reason).Inc()
	}
}

func (m *allocatorMetrics) deadLettered(kind string) {
	if m != nil {
		m.deadLetteredTotal.WithLabelValues(kind).Inc()
	}
}

func (m *allocatorMetrics) observe(event string, d time.Duration) {
	if m != nil {
		m.handleSeconds.WithLabelValues(event).Observe(d.Seconds())
	}
}
