package subjects

import (
	"fmt"
)

// The public NATS API for services that publish directly: the same
// operations and JSON bodies as HTTP, on tms.api.<tenant>.<operation>.
const (
	OpCreateTicket = "create_ticket"
	OpCancelTicket = "cancel_ticket"
	OpGetTicket    = "get_ticket"
	OpGetCapacity  = "get_capacity" // GET /capacity
	OpGetAtRisk    = "get_at_risk"  // GET /tickets/at-risk
	OpListTickets  = "list_tickets" // GET /tickets
	OpValidateETA  = "validate_eta"
	OpAllocateSlot = "allocate_slot"
	APIAll         = "tms.api.*.*"
	QueueAPI       = "tms-api"
)

// The reads of one agent on the public NATS API.
const (
	OpGetAgent         = "get_agent"          // GET /agents/{agent_id}
	OpGetAgentSchedule = "get_agent_schedule" // GET /agents/{agent_id}/schedule
)

// API is the public request subject of one operation of one tenant.
func API(tenant, op string) string { return "tms.api." + mustID(tenant) + "." + mustID(op) }

// ParseAPI splits a public API subject.
func ParseAPI(subject string) (tenant, op string, err error) {
	const prefix = "tms.api."
	if len(subject) > len(prefix) && subject[:len(prefix)] == prefix {
		rest := subject[len(prefix):]
		for i := 0; i < len(rest); i++ {
			if rest[i] == '.' {
				tenant, op = rest[:i], rest[i+1:]
				if ValidID(tenant) == nil && ValidID(op) == nil {
					return tenant, op, nil
				}
				break
			}
		}
	}
	return "", "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
}
