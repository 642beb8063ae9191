package subjects

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The parked stream: slot records of a tenant whose database could not be
// reached, set aside by the allocators so that one stalled tenant holds up
// no one else's records (the slot consumers' MaxAckPending is shared by
// every tenant of a shard) and so that a record outlives the slot bucket's
// age limit (SlotRecordAge) for as long as the database stays away.
//
// A parked message is the slot record as the bucket's stream had it (its
// data), under tms.parked.<tenant>.<ticket>, with the headers
// HeaderOriginalSubject (the $KV subject: bucket and key) and
// HeaderOriginalSequence (its revision in that stream). A ticket's newest
// parked record is the last message on its subject (a direct get by
// subject), the one a look-up reads when the slot record has aged out.
const (
	StreamParked = "TMS_PARKED"
	// ParkedAll is the stream's subject filter.
	ParkedAll = "tms.parked.>"
	// ConsumerParked is the durable consumer every allocator process
	// shares on the parked stream: it writes parked records once their
	// tenant's database is back.
	ConsumerParked = "parked"
)

const parkedPrefix = "tms.parked."

// ParkedSubject is the subject of one ticket's parked records.
func ParkedSubject(tenant, ticket string) string {
	return parkedPrefix + mustID(tenant) + "." + mustID(ticket)
}

// TenantParked matches every parked record of a tenant.
func TenantParked(tenant string) string { return parkedPrefix + mustID(tenant) + ".>" }

// ParseParkedSubject splits a parked subject read back from a message
// (anyone with access to the stream can publish: validate before use).
func ParseParkedSubject(subject string) (tenant, ticket string, err error) {
	rest, ok := strings.CutPrefix(subject, parkedPrefix)
	if ok {
		tenant, ticket, ok = strings.Cut(rest, ".")
	}
	if !ok || ValidID(tenant) != nil || ValidID(ticket) != nil {
		return "", "", fmt.Errorf("%w: parked subject %q", ErrInvalidID, subject)
	}
	return tenant, ticket, nil
}

// DecodeParkedRecord reads a parked message back: subject is its parked
// subject, original its HeaderOriginalSubject, data its body. The record
// must pass DecodeSlotRecord (CheckWritable) for the original's key and be
// the ticket of the parked subject (a create or a cancel). A look-up of a
// ticket whose slot record aged out reads the last message on
// ParkedSubject(tenant, ticket) and this gives its newest event
// (rec.Event()).
func DecodeParkedRecord(subject, original string, data []byte) (SlotRecord, error) {
	tenant, ticket, err := ParseParkedSubject(subject)
	if err != nil {
		return SlotRecord{}, err
	}
	_, key, err := ParseSlotSubject(original)
	if err != nil {
		return SlotRecord{}, err
	}
	rec, err := DecodeSlotRecord(key, data, CheckWritable)
	if err != nil {
		return SlotRecord{}, err
	}
	if !rec.HasTicket() || rec.Tenant != tenant || rec.Ticket != ticket {
		return SlotRecord{}, fmt.Errorf("%w: parked record %s is of key %q, ticket %q", ErrInvalidSlot, subject, key, rec.Ticket)
	}
	return rec, nil
}

// ParkedMsgID is the Nats-Msg-Id of the parked copy of the record at
// sequence seq of a slot stream, whose subject is original: parking the
// same record again (its ack was lost, it came back) is deduplicated
// within the stream's duplicate window, and a later copy is harmless
// (writes are idempotent).
func ParkedMsgID(original string, seq uint64) string {
	return original + ":" + strconv.FormatUint(seq, 10)
}

// ParkedStreamConfig is the parked stream: file storage, no age limit (a
// parked record is kept until it is written, however long its tenant's
// database is away: that is what keeps a ticket from ageing out with its
// slot record), work-queue retention (the ack after the write deletes it;
// a tombstone on a rare path), and direct gets for the look-up.
func ParkedStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamParked,
		Description: "tms slot records of tenants whose database was unreachable, kept until written",
		Subjects:    []string{ParkedAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
		MaxMsgSize:  MaxSlotRecordBytes + 4<<10,
	}
}
