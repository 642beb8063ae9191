package subjects

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketIdempotency remembers Idempotency-Key answers of create_ticket for
// 24 h: key <tenant>.<hex sha256 of the header value>.
const BucketIdempotency = "TMS_IDEMPOTENCY"

// IdempotencyKey is the bucket key of one tenant's Idempotency-Key, given
// the hex SHA-256 of the header value.
func IdempotencyKey(tenant, keyHashHex string) string {
	return mustID(tenant) + "." + mustID(keyHashHex)
}

// IdempotencySubject is the stream subject behind one key of the
// idempotency bucket. Writing to it directly, with an expected last
// sequence and a message TTL, is the only way to replace a record under
// compare-and-set and keep a TTL on it (a KV Update drops the TTL; docs/nats.md).
func IdempotencySubject(tenant, keyHashHex string) string {
	return "$KV." + BucketIdempotency + "." + IdempotencyKey(tenant, keyHashHex)
}

// IdempotencyBucketConfig remembers create_ticket answers per
// Idempotency-Key; every key carries its own TTL (24 h once done).
func IdempotencyBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         BucketIdempotency,
		Description:    "tms create_ticket answers per Idempotency-Key",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicasOr1(replicas),
		LimitMarkerTTL: time.Minute,
		MaxValueSize:   8 << 10,
	}
}

// Idempotency record states.
const (
	IdempotencyPending = "pending"
	IdempotencyDone    = "done"
)

// IdempotencyRecord is the value stored under IdempotencyKey: the request's
// fingerprint, the nonce of its ticket's id, and, once done, the ticket
// id and the 201 body.
//
// A pending record fixes Nonce (NewTicketNonce) before the slot, and so
// the ticket id (NewSlotTicketID), is known: a retry that takes over a
// twin presumed dead asks for the ticket with that nonce. Records written
// before ticket ids named their slot have no Nonce: a pending one fixed
// the whole Ticket id instead; they still decode.
type IdempotencyRecord struct {
	State    string    `json:"state"`
	BodyHash string    `json:"body_hash"`
	Nonce    string    `json:"nonce,omitempty"`
	Ticket   string    `json:"ticket,omitempty"`
	Response []byte    `json:"response,omitempty"`
	Created  time.Time `json:"created"`
}

// AcceptedAnswer is create_ticket's 201 body, field for field: what HTTP
// and the NATS API answer, and what a done IdempotencyRecord keeps as its
// Response to answer a retry with. Instants are FormatStamp's.
type AcceptedAnswer struct {
	Status     string `json:"status"`
	TicketID   string `json:"ticket_id"`
	TicketType string `json:"ticket_type"`
	SlotTime   string `json:"slot_time"`
	Deadline   string `json:"deadline"`
	AgentID    string `json:"agent_id"`
	CreatedAt  string `json:"created_at"`
}

// NewAcceptedAnswer is the 201 body of an accepted ticket.
func NewAcceptedAnswer(ticket, typ, agent string, slotTime, deadline, createdAt time.Time) AcceptedAnswer {
	return AcceptedAnswer{
		Status: StatusAccepted, TicketID: ticket, TicketType: typ, SlotTime: FormatStamp(slotTime),
		Deadline: FormatStamp(deadline), AgentID: agent, CreatedAt: FormatStamp(createdAt),
	}
}
