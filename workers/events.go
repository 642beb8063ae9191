package workers

import (
	"encoding/json"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/subjects"
)

// Who publishes which ticket lifecycle event (subjects.EventSubject,
// core NATS), each right after the write it reports:
//   - accepted: the ETA responder, once the confirmed record of a new
//     ticket is written (reserve, or a hold confirmed). Every way in
//     (HTTP, the NATS API, a service that sends ETA requests itself) ends
//     in that one write, so this is the one place that sees them all; the
//     ingress only sees its own requests, and would have to be taught each
//     new way in.
//   - allocated, cancelled: the allocator, once the ticket's row or its
//     cancel committed in the tenant database (settle), so a subscriber
//     that reads the row finds what the event says.
//   - moved: the allocator, once the row followed the move (applyMove).
//   - at_risk: the responder, when a re-plan cannot rescue a ticket.
//
// An event is a notification: a publish that fails is counted and logged
// at debug, and never fails or holds up the ticket.

// eventsPublishFailed counts events not published, by kind. One
// collector for the process, not one per responder or allocator: both
// publish events, on the same registry in a worker, and the counter says
// how many notifications were lost whichever published them.
var eventsPublishFailed = func() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_events_publish_failed_total",
		Help: "Ticket lifecycle events (tms.events.<tenant>.<kind>) not published, by kind; the ticket itself is not affected.",
	}, []string{"kind"})
	for _, k := range subjects.EventKinds {
		c.WithLabelValues(k)
	}
	return c
}()

// registerEventMetrics puts the events' collectors on reg (nil: none);
// a registry that has them already keeps them.
func registerEventMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	_, err := ops.Register(reg, prometheus.Collector(eventsPublishFailed))
	return err
}

// publishEvent publishes body as tenant's event of kind on core NATS and
// reports whether it went out (into the connection's buffer: core NATS
// says no more). A failure is counted and logged at debug only: events
// may be lost by design, and a NATS outage is reported loudly elsewhere.
func publishEvent(nc *nats.Conn, log *slog.Logger, tenant, kind, ticket string, body any) bool {
	// Every caller's tenant was validated with the request or record it
	// came in; checked again here because EventSubject panics on an id
	// that is not one, and a notification must never take a worker down.
	err := subjects.ValidID(tenant)
	var data []byte
	if err == nil {
		data, err = json.Marshal(body)
	}
	if err == nil {
		err = nc.Publish(subjects.EventSubject(tenant, kind), data)
	}
	if err != nil {
		eventsPublishFailed.WithLabelValues(kind).Inc()
		log.Debug("ticket event not published", slog.String("event", kind), slog.String("tenant", tenant),
			slog.String("ticket", ticket), slog.Any("err", err))
		return false
	}
	return true
}

// lifecycle is what the kind's event says of the ticket of ev.
func lifecycle(kind string, ev subjects.TicketEvent) subjects.LifecycleEvent {
	return subjects.LifecycleEvent{Event: kind, Tenant: ev.Tenant, Ticket: ev.Ticket, Type: ev.Type,
		Agent: ev.Agent, SlotTime: ev.SlotTime.UTC(), Deadline: ev.Deadline.UTC(), CreatedAt: ev.CreatedAt.UTC()}
}

// acceptedEvent is the accepted event of a new ticket's created event.
func acceptedEvent(ev subjects.TicketEvent) subjects.AcceptedEvent {
	return subjects.AcceptedEvent{LifecycleEvent: lifecycle(subjects.EventAccepted, ev)}
}

// allocatedEvent is the allocated event of a created event written.
func allocatedEvent(ev subjects.TicketEvent) subjects.AllocatedEvent {
	return subjects.AllocatedEvent{LifecycleEvent: lifecycle(subjects.EventAllocated, ev)}
}

// cancelledEvent is the cancelled event of a cancelled event written.
func cancelledEvent(ev subjects.TicketEvent) subjects.CancelledEvent {
	out := subjects.CancelledEvent{LifecycleEvent: lifecycle(subjects.EventCancelled, ev)}
	if ev.CancelledAt != nil {
		out.CancelledAt = ev.CancelledAt.UTC()
	}
	return out
}
