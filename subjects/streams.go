package subjects

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SlotMarkerTTL is how long a slot bucket keeps the marker a per-key TTL
// leaves behind, so a watcher that rebuilds still sees the removal.
const SlotMarkerTTL = 10 * time.Minute

// SlotBucketConfig is the configuration of slot shard i. History stays at
// 1: with more history and LimitMarkerTTL the server raises every message
// TTL to at least the marker TTL (docs/nats.md), which would stretch holds.
func SlotBucketConfig(shard, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         SlotBucket(shard),
		Description:    "tms slot reservations: <tenant>.<agent>.<minute>, free when absent",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicasOr1(replicas),
		LimitMarkerTTL: SlotMarkerTTL,
		MaxValueSize:   4 << 10,
	}
}

// TicketsStreamConfig is the TICKETS stream: accepted tickets and cancels
// on their way to the allocator workers. Work-queue retention keeps a
// message until a worker acks it after its Postgres commit, however long
// that takes, and no longer; the duplicate window makes a re-publish of the
// same ticket id (a retry) a no-op.
func TicketsStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamTickets,
		Description: "tms accepted tickets and cancels, one subject per ticket",
		Subjects:    []string{TicketsAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
		Duplicates:  2 * time.Minute,
		Discard:     jetstream.DiscardNew,
		AllowDirect: true,
		MaxMsgSize:  16 << 10,
	}
}

// DeadLettersStreamConfig keeps ticket events no worker could ever write,
// for 30 days, for an operator to inspect and replay.
func DeadLettersStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamDeadLetters,
		Description: "tms ticket events that could not be written: inspect and replay",
		Subjects:    []string{DeadLettersAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
		MaxAge:      30 * 24 * time.Hour,
		MaxMsgSize:  64 << 10,
	}
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

func replicasOr1(r int) int {
	if r <= 0 {
		return 1
	}
	return r
}
