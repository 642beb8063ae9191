package subjects

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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

// NewHoldNonce is the random part of a new slot id: HoldNonceLen
// characters of [a-z2-7].
func NewHoldNonce() string { return NewID("", HoldNonceLen) }

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

// SlotSubject is the stream subject behind one slot key. Publishing to it
// with an expected last sequence and a message TTL is how a responder
// turns a hold into a confirmed reservation under compare-and-set while
// setting the reservation's own TTL (a KV Update drops the TTL; docs/nats.md).
func SlotSubject(tenant, agent string, minute time.Time, shards int) string {
	return "$KV." + SlotBucket(SlotShard(tenant, shards)) + "." + SlotKey(tenant, agent, minute)
}

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

// Slot reservation states.
const (
	// SlotHeld is validate_eta's pending hold: it carries a key TTL of
	// --hold-ttl and disappears unless allocate_slot confirms it.
	SlotHeld = "held"
	// SlotConfirmed is a reservation backing an accepted ticket. Its key
	// TTL runs to some time after the slot's minute has passed, never
	// shorter: a confirmed reservation does not expire while it matters.
	SlotConfirmed = "confirmed"
)

// SlotRecord is the value stored under SlotKey.
type SlotRecord struct {
	State         string     `json:"state"`
	Ticket        string     `json:"ticket,omitempty"` // set once confirmed
	Type          string     `json:"type"`
	CreatedAt     time.Time  `json:"created_at"` // the instant the SLA window is judged from
	Nonce         string     `json:"nonce,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`
}
