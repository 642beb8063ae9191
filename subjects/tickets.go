package subjects

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"
)

// Ticket types, as the API spells them (case-sensitive).
const (
	Gold   = "GOLD"
	Silver = "SILVER"
	Bronze = "BRONZE"
)

// SLA returns the resolution window of a ticket type, and false for
// anything that is not exactly GOLD, SILVER or BRONZE.
func SLA(ticketType string) (time.Duration, bool) {
	switch ticketType {
	case Gold:
		return 2 * time.Hour, true
	case Silver:
		return 4 * time.Hour, true
	case Bronze:
		return 8 * time.Hour, true
	}
	return 0, false
}

// LongestSLA is the longest window of any ticket type: how far ahead an
// agent's slots must be known.
const LongestSLA = 8 * time.Hour

// Slot reservations live in a few shard buckets, a tenant always in one
// shard (docs/design.md, "State"): a key per reserved agent-minute, free when
// absent.
const (
	slotBucketPrefix = "TMS_SLOTS_"
	// DefaultSlotShards is the shard count when none is configured. It can
	// only change on an empty system: a tenant's shard is a hash of its id
	// modulo the count.
	DefaultSlotShards = 4
)

// SlotBucket is the name of shard i's bucket.
func SlotBucket(shard int) string { return slotBucketPrefix + strconv.Itoa(shard) }

// SlotStream is the stream behind slot bucket shard (bucket B is stream
// KV_B), for stream info.
func SlotStream(shard int) string { return "KV_" + SlotBucket(shard) }

// SlotShard is the shard that holds a tenant's reservations.
func SlotShard(tenant string, shards int) int {
	if shards <= 0 {
		panic("subjects: shard count must be positive")
	}
	h := fnv.New32a()
	h.Write([]byte(mustID(tenant)))
	return int(h.Sum32() % uint32(shards))
}

// minuteLayout formats a slot minute in keys and slot ids: UTC, to the
// minute, digits only.
const minuteLayout = "200601021504"

// ErrInvalidSlot reports a slot key or slot id that does not parse.
var ErrInvalidSlot = errors.New("invalid slot")

// SlotKey is the key of one agent-minute of one tenant:
// <tenant>.<agent>.<YYYYMMDDHHMM>. minute must be a whole UTC minute.
func SlotKey(tenant, agent string, minute time.Time) string {
	return mustID(tenant) + "." + mustID(agent) + "." + formatMinute(minute)
}

// TenantSlots is the watch filter matching every slot key of a tenant.
func TenantSlots(tenant string) string { return mustID(tenant) + ".>" }

// ParseSlotKey splits a slot key read back from a bucket (a watch sees keys
// written by anyone: validate before use).
func ParseSlotKey(key string) (tenant, agent string, minute time.Time, err error) {
	var parts [3]string
	n := 0
	start := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '.' {
			if n == 3 {
				return "", "", time.Time{}, fmt.Errorf("%w: key %q has too many tokens", ErrInvalidSlot, key)
			}
			parts[n] = key[start:i]
			n++
			start = i + 1
		}
	}
	if n != 3 {
		return "", "", time.Time{}, fmt.Errorf("%w: key %q is not tenant.agent.minute", ErrInvalidSlot, key)
	}
	if ValidID(parts[0]) != nil || ValidID(parts[1]) != nil {
		return "", "", time.Time{}, fmt.Errorf("%w: key %q has a bad tenant or agent", ErrInvalidSlot, key)
	}
	minute, err = parseMinute(parts[2])
	if err != nil {
		return "", "", time.Time{}, err
	}
	return parts[0], parts[1], minute, nil
}

func formatMinute(t time.Time) string {
	t = t.UTC()
	if !t.Equal(t.Truncate(time.Minute)) {
		panic(fmt.Sprintf("subjects: slot minute %s is not a whole minute", t.Format(time.RFC3339Nano)))
	}
	return t.Format(minuteLayout)
}

func parseMinute(s string) (time.Time, error) {
	if len(s) != len(minuteLayout) {
		return time.Time{}, fmt.Errorf("%w: minute %q", ErrInvalidSlot, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, fmt.Errorf("%w: minute %q", ErrInvalidSlot, s)
		}
	}
	t, err := time.Parse(minuteLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: minute %q: %v", ErrInvalidSlot, s, err)
	}
	return t, nil
}

// HoldNonceLen is the length of the random part of a slot id.
const HoldNonceLen = 12

// FormatSlotID is the opaque slot_id of a pending hold that validate_eta
// hands out: <YYYYMMDDHHMM>-<agent>-<nonce>. The nonce tells this hold
// from a later hold on the same agent-minute.
func FormatSlotID(agent string, minute time.Time, nonce string) string {
	if len(nonce) != HoldNonceLen || ValidID(nonce) != nil {
		panic(fmt.Sprintf("subjects: bad hold nonce %q", nonce))
	}
	return formatMinute(minute) + "-" + mustID(agent) + "-" + nonce
}

// ParseSlotID is FormatSlotID's inverse. Any string that FormatSlotID
// cannot have produced is ErrInvalidSlot (400 at the API).
func ParseSlotID(id string) (agent string, minute time.Time, nonce string, err error) {
	const minLen = len(minuteLayout) + 1 + 1 + 1 + HoldNonceLen
	if len(id) < minLen || len(id) > len(minuteLayout)+2+MaxIDLen+HoldNonceLen {
		return "", time.Time{}, "", fmt.Errorf("%w: slot_id length %d", ErrInvalidSlot, len(id))
	}
	m, rest := id[:len(minuteLayout)], id[len(minuteLayout):]
	if rest[0] != '-' || rest[len(rest)-HoldNonceLen-1] != '-' {
		return "", time.Time{}, "", fmt.Errorf("%w: slot_id %q", ErrInvalidSlot, id)
	}
	agent = rest[1 : len(rest)-HoldNonceLen-1]
	nonce = rest[len(rest)-HoldNonceLen:]
	if ValidID(agent) != nil || ValidID(nonce) != nil {
		return "", time.Time{}, "", fmt.Errorf("%w: slot_id %q", ErrInvalidSlot, id)
	}
	minute, err = parseMinute(m)
	if err != nil {
		return "", time.Time{}, "", err
	}
	return agent, minute, nonce, nil
}

// The TICKETS stream: one subject per ticket under its tenant,
// tms.tickets.<tenant>.<ticket>, so that the ticket's latest event can be
// read back by subject, and one tenant's tickets are tms.tickets.<tenant>.>.
const (
	StreamTickets = "TMS_TICKETS"
	// TicketsAll is the stream's subject filter (one wildcard: a consumer
	// with many filters is slow).
	TicketsAll = "tms.tickets.>"
	// ConsumerAllocators is the durable pull consumer every allocator
	// worker process shares.
	ConsumerAllocators = "allocators"
	// StreamDeadLetters keeps ticket events that can never be written, for
	// an operator: nothing is dropped silently.
	StreamDeadLetters = "TMS_TICKETS_DLQ"
	DeadLettersAll    = "tms.dlq.tickets.>"
)

// TicketSubject is the stream subject of one ticket's events.
func TicketSubject(tenant, ticket string) string {
	return "tms.tickets." + mustID(tenant) + "." + mustID(ticket)
}

// TenantTickets matches every ticket subject of a tenant.
func TenantTickets(tenant string) string { return "tms.tickets." + mustID(tenant) + ".>" }

// ParseTicketSubject splits a stream subject read back from a message.
func ParseTicketSubject(subject string) (tenant, ticket string, err error) {
	const prefix = "tms.tickets."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
	}
	rest := subject[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			tenant, ticket = rest[:i], rest[i+1:]
			if ValidID(tenant) != nil || ValidID(ticket) != nil {
				break
			}
			return tenant, ticket, nil
		}
	}
	return "", "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
}

// DeadLetterSubject is where an unwritable event of a ticket is parked.
func DeadLetterSubject(tenant, ticket string) string {
	return "tms.dlq.tickets." + mustID(tenant) + "." + mustID(ticket)
}

// DeadLetterInvalid parks events whose own subject does not name a valid
// tenant and ticket. It has one token fewer than any DeadLetterSubject, so
// it never collides with a tenant's dead letters.
const DeadLetterInvalid = "tms.dlq.tickets.invalid"

// Headers a dead letter carries besides the original message's own.
const (
	// HeaderDeadLetterReason says why no worker could write the event.
	HeaderDeadLetterReason = "Tms-Dead-Letter-Reason"
	// HeaderOriginalSubject is the TICKETS subject the event came from.
	HeaderOriginalSubject = "Tms-Original-Subject"
	// HeaderOriginalSequence is the event's sequence in the TICKETS stream.
	HeaderOriginalSequence = "Tms-Original-Sequence"
)

// ETA responders answer request-reply on a subject per tenant, as one
// queue group so that several processes share the load.
const (
	ETAAll   = "tms.eta.*"
	QueueETA = "tms-eta"
)

// ETA is the responder subject of a tenant.
func ETA(tenant string) string { return "tms.eta." + mustID(tenant) }

// ParseETA returns the tenant of an ETA subject.
func ParseETA(subject string) (string, error) {
	const prefix = "tms.eta."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix || ValidID(subject[len(prefix):]) != nil {
		return "", fmt.Errorf("%w: subject %q", ErrInvalidID, subject)
	}
	return subject[len(prefix):], nil
}

// The public NATS API for services that publish directly: the same
// operations and JSON bodies as HTTP, on tms.api.<tenant>.<operation>.
const (
	OpCreateTicket = "create_ticket"
	OpCancelTicket = "cancel_ticket"
	OpGetTicket    = "get_ticket"
	OpValidateETA  = "validate_eta"
	OpAllocateSlot = "allocate_slot"
	APIAll         = "tms.api.*.*"
	QueueAPI       = "tms-api"
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

// BucketIdempotency remembers Idempotency-Key answers of create_ticket for
// 24 h: key <tenant>.<hex sha256 of the header value>.
const BucketIdempotency = "TMS_IDEMPOTENCY"

// IdempotencyKey is the bucket key of one tenant's Idempotency-Key, given
// the hex SHA-256 of the header value.
func IdempotencyKey(tenant, keyHashHex string) string {
	return mustID(tenant) + "." + mustID(keyHashHex)
}
