package workers

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tms/ops/testkit"
	"tms/subjects"
)

// TestPublishEventFailureCounted: an event that cannot be published (its
// connection closed, a tenant that is no id) is counted under its kind
// only, and the caller is told; one that goes out is not counted. Not parallel: the counter is
// the process's, and parallel tests publish too.
func TestPublishEventFailureCounted(t *testing.T) {
	srv := testkit.StartNATS(t)
	nc := srv.Connect(t)
	reg := prometheus.NewRegistry()
	if err := registerEventMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := registerEventMetrics(reg); err != nil {
		t.Fatalf("a second registration on the same registry: %v", err)
	}
	before := map[string]float64{}
	for _, k := range subjects.EventKinds {
		before[k] = failedCount(t, k)
	}
	ev := allocatedEvent(subjects.TicketEvent{Event: subjects.TicketCreated, Tenant: "c1", Ticket: "t1", Type: subjects.Gold,
		Agent: "a1", SlotTime: time.Now().Truncate(time.Minute), CreatedAt: time.Now(), Deadline: time.Now().Add(time.Hour)})
	log := slog.New(slog.DiscardHandler)
	if !publishEvent(nc, log, "c1", subjects.EventAllocated, "t1", ev) {
		t.Fatal("publish on an open connection failed")
	}
	// A tenant that is no id is refused, not a panic of EventSubject.
	if publishEvent(nc, log, "c1.*", subjects.EventAccepted, "t1", ev) {
		t.Fatal("publish for tenant c1.* reported sent")
	}
	nc.Close()
	if publishEvent(nc, log, "c1", subjects.EventAllocated, "t1", ev) {
		t.Fatal("publish on a closed connection reported sent")
	}
	for _, k := range subjects.EventKinds {
		want := before[k]
		if k == subjects.EventAllocated || k == subjects.EventAccepted {
			want++
		}
		if got := failedCount(t, k); got != want {
			t.Errorf("failed{%s} = %v, want %v", k, got, want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "tms_events_publish_failed_total" || len(mfs[0].GetMetric()) != len(subjects.EventKinds) {
		t.Errorf("registry has %v, want tms_events_publish_failed_total with one series per kind", mfs)
	}
}

// failedCount is the process's count of kind's failed publishes.
func failedCount(t *testing.T, kind string) float64 {
	t.Helper()
	var m dto.Metric
	if err := eventsPublishFailed.WithLabelValues(kind).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
