package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"tms/subjects"
)

// decodeTicketEvent reads a ticket event strictly (unknown fields, trailing data
// and oversize bodies refused) and checks it against its subject's tenant
// and ticket, the SLA of its type and the window rule of docs/api.md.
func decodeTicketEvent(data []byte, tenant, ticket string) (subjects.TicketEvent, error) {
	var ev subjects.TicketEvent
	if len(data) > allocMaxEventBytes {
		return ev, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidEvent, len(data), allocMaxEventBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, fmt.Errorf("%w: json: %v", ErrInvalidEvent, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ev, fmt.Errorf("%w: data after the JSON object", ErrInvalidEvent)
	}
	sla, ok := subjects.SLA(ev.Type)
	switch {
	case ev.Event != subjects.TicketCreated && ev.Event != subjects.TicketCancelled:
		return ev, fmt.Errorf("%w: event %q", ErrInvalidEvent, ev.Event)
	case ev.Tenant != tenant:
		return ev, fmt.Errorf("%w: body tenant %q differs from the subject's %q", ErrInvalidEvent, ev.Tenant, tenant)
	case ev.Ticket != ticket:
		return ev, fmt.Errorf("%w: body ticket %q differs from the subject's %q", ErrInvalidEvent, ev.Ticket, ticket)
	case !ok:
		return ev, fmt.Errorf("%w: ticket type %q", ErrInvalidEvent, ev.Type)
	case subjects.ValidID(ev.Agent) != nil:
		return ev, fmt.Errorf("%w: agent id %q", ErrInvalidEvent, ev.Agent)
	case ev.CreatedAt.IsZero():
		return ev, fmt.Errorf("%w: no created_at", ErrInvalidEvent)
	case ev.SlotTime.IsZero() || !ev.SlotTime.Equal(ev.SlotTime.Truncate(time.Minute)):
		return ev, fmt.Errorf("%w: slot_time %s is not a whole minute", ErrInvalidEvent, ev.SlotTime.Format(time.RFC3339Nano))
	case !ev.Deadline.Equal(ev.CreatedAt.Add(sla)):
		return ev, fmt.Errorf("%w: deadline %s is not created_at + %s", ErrInvalidEvent, ev.Deadline.Format(time.RFC3339Nano), sla)
	case ev.SlotTime.Before(ev.CreatedAt) || ev.SlotTime.Add(time.Minute).After(ev.Deadline):
		return ev, fmt.Errorf("%w: slot_time %s outside the window [%s, %s]", ErrInvalidEvent,
			ev.SlotTime.Format(time.RFC3339), ev.CreatedAt.Format(time.RFC3339Nano), ev.Deadline.Format(time.RFC3339Nano))
	case ev.Event == subjects.TicketCreated && ev.CancelledAt != nil:
		return ev, fmt.Errorf("%w: a created event with cancelled_at", ErrInvalidEvent)
	}
	return ev, nil
}
