package workers

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/tenants"
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

	// issue 11: what an operator scales the workers by.
	concurrencyGauge prometheus.Gauge
	writingGauge     prometheus.GaugeFunc
	latency          *prometheus.HistogramVec
	redeliveries     prometheus.Counter
	dbErrors         *prometheus.CounterVec
	backlog          *prometheus.GaugeVec
	oldest           *prometheus.GaugeVec
	deadLetters      prometheus.Gauge
}

// Label values of the backlog gauges' consumer label: slots-<shard> for
// the allocators' consumer of a slot shard, parked for the parked
// stream's.
const backlogParked = "parked"

func backlogSlots(shard int) string { return "slots-" + strconv.Itoa(shard) }

// newAllocatorMetrics registers the allocator's collectors, every
// labelled child created at zero (shards slot consumers); writing is read
// at each scrape.
func newAllocatorMetrics(reg prometheus.Registerer, shards int, writing func() int) (*allocatorMetrics, error) {
	m := &allocatorMetrics{
		concurrencyGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tms_allocator_concurrency",
			Help: "Tenant batches this process may write at once: --alloc-concurrency, or the live setting of tms ops workers scale.",
		}),
		writingGauge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tms_allocator_writing",
			Help: "Tenant batches this process is writing (and settling) now, at most tms_allocator_concurrency.",
		}, func() float64 { return float64(writing()) }),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tms_allocator_allocation_latency_seconds",
			Help:    "Time from a ticket's slot record entering its slot stream to its write committed in the tenant database, by record (created, cancelled, moved); a parked record counts from its original.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}, []string{"record"}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tms_allocator_redeliveries_total",
			Help: "Slot record deliveries received again (NumDelivered > 1): given back, or not acked within the ack wait.",
		}),
		dbErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tms_tenant_db_errors_total",
			Help: "Failed tenant database writes of the allocators, by kind (unavailable, timeout, conflict, constraint, other).",
		}, []string{"kind"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tms_allocator_backlog_records",
			Help: "Records not yet settled by the allocators, by consumer (slots-<shard>, parked): pending plus ack pending, read every few seconds.",
		}, []string{"consumer"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tms_allocator_oldest_unallocated_seconds",
			Help: "Age of the oldest record a consumer (slots-<shard>, parked) has not settled: the stream message after its ack floor; 0 when nothing is pending. Read every few seconds.",
		}, []string{"consumer"}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tms_dead_letters",
			Help: "Messages in the dead-letter stream (TMS_TICKETS_DLQ), read every few seconds.",
		}),

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
		ops.Collector(&m.movesTotal), ops.Collector(&m.moveEventsFailed),
		ops.Collector(&m.concurrencyGauge), ops.Collector(&m.writingGauge), ops.Collector(&m.latency),
		ops.Collector(&m.redeliveries), ops.Collector(&m.dbErrors), ops.Collector(&m.backlog),
		ops.Collector(&m.oldest), ops.Collector(&m.deadLetters)); err != nil {
		return nil, err
	}
	for _, r := range []string{recordCreated, recordCancelled, recordMoved} {
		m.latency.WithLabelValues(r)
	}
	for _, k := range tenants.DBErrorKinds {
		m.dbErrors.WithLabelValues(k)
	}
	for i := range shards {
		m.backlog.WithLabelValues(backlogSlots(i))
		m.oldest.WithLabelValues(backlogSlots(i))
	}
	m.backlog.WithLabelValues(backlogParked)
	m.oldest.WithLabelValues(backlogParked)
	// The older families too: every label value is one of a fixed list,
	// and a series that appears only with its first event cannot be
	// alerted on (rate() of a missing series is no data, not 0).
	handled := []string{recordCreated, recordMoved, recordCancelled, recordHeld, recordFreed, recordVacated}
	for _, r := range handled {
		m.processedTotal.WithLabelValues(r)
		m.handleSeconds.WithLabelValues(r)
	}
	m.handleSeconds.WithLabelValues(recordInvalid)
	for _, r := range []string{recordCreated, recordMoved, recordCancelled} {
		m.parkedTotal.WithLabelValues(r)
	}
	for _, r := range []string{retryUnavailable, retryConflict, retryRegistry, retryError, retryDeadLetterPublish, retryParkPublish} {
		m.failedTotal.WithLabelValues(r)
	}
	for _, k := range []string{kindInvalid, kindUnknownTenant, kindDoubleBooking, kindError} {
		m.deadLetteredTotal.WithLabelValues(k)
	}
	return m, nil
}

func (m *allocatorMetrics) concurrency(n int) {
	if m != nil {
		m.concurrencyGauge.Set(float64(n))
	}
}

// allocated observes the latency of a ticket's record written, for the
// records the histogram has a child of.
func (m *allocatorMetrics) allocated(record string, d time.Duration) {
	if m == nil {
		return
	}
	switch record {
	case recordCreated, recordCancelled, recordMoved:
		m.latency.WithLabelValues(record).Observe(max(d, 0).Seconds())
	}
}

func (m *allocatorMetrics) redelivered() {
	if m != nil {
		m.redeliveries.Inc()
	}
}

// dbError counts a failed tenant database call; nil counts nothing.
func (m *allocatorMetrics) dbError(err error) {
	if m != nil && err != nil {
		m.dbErrors.WithLabelValues(tenants.DBErrorKind(err)).Inc()
	}
}

// backlogOf sets the gauges of one consumer.
func (m *allocatorMetrics) backlogOf(consumer string, records uint64, oldest time.Duration) {
	if m != nil {
		m.backlog.WithLabelValues(consumer).Set(float64(records))
		m.oldest.WithLabelValues(consumer).Set(max(oldest, 0).Seconds())
	}
}

func (m *allocatorMetrics) deadLetterDepth(n uint64) {
	if m != nil {
		m.deadLetters.Set(float64(n))
	}
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
