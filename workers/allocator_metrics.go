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
	batchRecords      prometheus.Histogram
	parkedTotal       *prometheus.CounterVec
	tenantsDownGauge  prometheus.Gauge
	movesTotal        prometheus.Counter
	moveEventsFailed  prometheus.Counter
}

func newAllocatorMetrics(reg prometheus.Registerer) (*allocatorMetrics, error) {
	m := &allocatorMetrics{
		processedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_processed_total",
			Help: "Slot records handled and acked, by record: created, moved and cancelled (a ticket's, written into its tenant database), held, freed and vacated (nothing to write).",
		}, []string{"event"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_failed_total",
			Help: "Slot record deliveries given back for redelivery, by reason (unavailable: a parked record whose tenant is still down, conflict, registry, error, dead_letter_publish, park_publish).",
		}, []string{"reason"}),
		deadLetteredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_dead_lettered_total",
			Help: "Slot records parked on the dead-letter stream, by kind (invalid, unknown_tenant, double_booking, error).",
		}, []string{"kind"}),
		handleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tms_allocator_handle_seconds",
			Help:    "Time from the pull of one slot record delivery to its settling (its tenant's queue and batch included), by record (created, moved, cancelled, held, freed, vacated, invalid).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"event"}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tms_allocator_batch_records",
			Help:    "Records of one tenant handled together in one batch (consecutive tickets written in one transaction).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
		parkedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_allocator_parked_total",
			Help: "Slot records set aside on the parked stream because their tenant's database was unreachable, by record (created, moved, cancelled).",
		}, []string{"event"}),
		tenantsDownGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tms_allocator_tenants_down",
			Help: "Tenants whose database failed and has not taken a write since, in this process (their records are parked).",
		}),
		movesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_allocator_moves_total",
			Help: "Moves of tickets applied to tenant databases: a row moved to the agent-minute of a moved ticket's newest record (or written there).",
		}),
		moveEventsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_allocator_move_events_failed_total",
			Help: "Moved events (tms.events.<tenant>.moved) not published after the move was applied; the move itself stands.",
		}),
	}
	if err := ops.RegisterAll(reg, ops.Collector(&m.processedTotal), ops.Collector(&m.failedTotal),
		ops.Collector(&m.deadLetteredTotal), ops.Collector(&m.handleSeconds), ops.Collector(&m.batchRecords),
		ops.Collector(&m.parkedTotal), ops.Collector(&m.tenantsDownGauge),
		ops.Collector(&m.movesTotal), ops.Collector(&m.moveEventsFailed)); err != nil {
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

func (m *allocatorMetrics) batched(records int) {
	if m != nil {
		m.batchRecords.Observe(float64(records))
	}
}

func (m *allocatorMetrics) parked(event string) {
	if m != nil {
		m.parkedTotal.WithLabelValues(event).Inc()
	}
}

func (m *allocatorMetrics) tenantsDown(n int) {
	if m != nil {
		m.tenantsDownGauge.Set(float64(n))
	}
}

func (m *allocatorMetrics) moved() {
	if m != nil {
		m.movesTotal.Inc()
	}
}

func (m *allocatorMetrics) moveEventFailed() {
	if m != nil {
		m.moveEventsFailed.Inc()
	}
}
