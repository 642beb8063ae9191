package subjects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Slot reservations live in a few shard buckets, a tenant always in one
// shard (docs/design.md, "State"): a key per agent-minute, whose newest
// record (SlotRecord) says whether it is free. The record that reserves a
// minute for a ticket is also the ticket's durable hand-off to the
// allocators, which consume the bucket's stream: one write per admission.
const (
	slotBucketPrefix = "TMS_RESERVATIONS_"
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

// SlotSubject is the stream subject behind one slot key: where the
// allocators' consumers see its records.
func SlotSubject(tenant, agent string, minute time.Time, shards int) string {
	return "$KV." + SlotBucket(SlotShard(tenant, shards)) + "." + SlotKey(tenant, agent, minute)
}

// SlotStreamSubjects is the subject filter of every record of shard.
func SlotStreamSubjects(shard int) string { return "$KV." + SlotBucket(shard) + ".>" }

// ParseSlotSubject splits a subject of a slot bucket's stream into the
// shard's bucket and the key (a consumer sees subjects written by anyone:
// validate before use).
func ParseSlotSubject(subject string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(subject, "$KV.")
	if !ok {
		return "", "", fmt.Errorf("%w: subject %q is not a slot bucket's", ErrInvalidSlot, subject)
	}
	bucket, key, ok = strings.Cut(rest, ".")
	if !ok || !strings.HasPrefix(bucket, slotBucketPrefix) {
		return "", "", fmt.Errorf("%w: subject %q is not a slot bucket's", ErrInvalidSlot, subject)
	}
	return bucket, key, nil
}

// SlotRecordAge is how long a slot bucket keeps a record (its MaxAge):
// longer than the longest SLA, so a reservation outlives its minute, and
// the allocators have that long to write a ticket before it ages out.
// Expiry by age writes nothing (no tombstone, no marker; docs/nats.md).
const SlotRecordAge = LongestSLA + time.Hour

// SlotHistory is how many records a slot key keeps (KV history; 64 is the
// most the server allows). A minute's records are few: a ticket, its
// cancel, the next ticket, and holds; the allocators read every one long
// before 64 more arrive on the same minute.
const SlotHistory = 64

// SlotBucketConfig is the configuration of slot shard i: limits retention
// (the KV default), records aged out after maxAge (0: SlotRecordAge), no
// per-key TTL and no limit markers, so nothing on the admission path
// deletes or writes a tombstone.
func SlotBucketConfig(shard, replicas int, maxAge time.Duration) jetstream.KeyValueConfig {
	if maxAge <= 0 {
		maxAge = SlotRecordAge
	}
	return jetstream.KeyValueConfig{
		Bucket:       SlotBucket(shard),
		Description:  "tms slot records: <tenant>.<agent>.<minute>; the newest says held, confirmed (a ticket) or released",
		History:      SlotHistory,
		Storage:      jetstream.FileStorage,
		Replicas:     replicasOr1(replicas),
		TTL:          maxAge,
		MaxValueSize: MaxSlotRecordBytes,
	}
}

// ConsumerAllocatorsPrefix names the allocators' durable consumer of each
// slot shard: AllocatorConsumer(i).
const ConsumerAllocatorsPrefix = "allocators-"

// AllocatorConsumer is the durable consumer every allocator process shares
// on shard i's stream.
func AllocatorConsumer(shard int) string { return ConsumerAllocatorsPrefix + strconv.Itoa(shard) }

// Slot record states.
const (
	// SlotHeld is validate_eta's pending hold: the minute is taken until
	// HoldExpiresAt, then free again without any write (a later
	// reservation replaces it, revision-checked).
	SlotHeld = "held"
	// SlotConfirmed is an accepted ticket in this minute: the
	// reservation and the ticket's hand-off to the allocators at once.
	SlotConfirmed = "confirmed"
	// SlotReleased frees the minute. With a Ticket it is that ticket's
	// cancel (CancelledAt set), which the allocators apply.
	SlotReleased = "released"
	// SlotVacated frees the minute because its ticket moved to another
	// agent-minute (Moved says where) and no ticket took the minute in the
	// same batch: a re-plan after an agent went away. The allocators apply
	// nothing for it (the moved ticket's own record, at its new key, moves
	// the row).
	SlotVacated = "vacated"
)

// SlotMove says where a ticket that held a key's minute went: the record
// that carries it (the new ticket's, or a vacated one) replaced that
// ticket's confirmed record in the same atomic batch that wrote the
// ticket's record at Agent and SlotTime. Readers of a ticket follow it.
type SlotMove struct {
	Ticket   string    `json:"ticket"`
	Agent    string    `json:"agent"`
	SlotTime time.Time `json:"slot_time"`
}

// MaxSlotRecordBytes bounds a slot record (the bucket's MaxValueSize).
// A ticket's record carries its content (Subject, Description): a
// maximal description is MaxDescriptionBytes, which encoding/json may
// write six times over (every byte of "<>&" escaped as \u003c), and a
// maximal subject 200 characters of the same; with the record's other
// members that is under 64 KiB, so 96 KiB leaves a wide margin. Buckets
// and streams made with an older, smaller bound are updated to it on
// start (jskit.OpenBucket, EnsureStream).
const MaxSlotRecordBytes = 96 << 10

// SlotRecord is one record under SlotKey: the value of a slot bucket key.
// The newest record of a key says whether its minute is free: absent,
// released, or a hold past its expiry.
type SlotRecord struct {
	State    string    `json:"state"` // SlotHeld, SlotConfirmed, SlotReleased or SlotVacated
	Tenant   string    `json:"tenant,omitempty"`
	Agent    string    `json:"agent,omitempty"`
	SlotTime time.Time `json:"slot_time,omitzero"`
	// Prev is the revision of the key's record this one replaced (0: the
	// key had none): readers walk back through it to a ticket's older
	// records (a cancelled ticket whose minute was taken again).
	Prev      uint64    `json:"prev,omitempty"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"` // the instant the SLA window is judged from
	// Held: the hold's nonce (its slot id's random part) and expiry.
	Nonce         string     `json:"nonce,omitempty"`
	HoldExpiresAt *time.Time `json:"hold_expires_at,omitempty"`
	// Confirmed and released: the ticket (its id names this key's agent
	// and minute, see NewSlotTicketID), its deadline, and for a cancel
	// when it was cancelled.
	Ticket      string     `json:"ticket,omitempty"`
	Deadline    time.Time  `json:"deadline,omitzero"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	// Abandoned (released only): the release came from the asker of an
	// admission whose outcome it never learnt (a release by nonce), so no
	// client was told of the ticket; an Idempotency-Key takeover then
	// admits anew with a fresh nonce instead of answering it.
	Abandoned bool `json:"abandoned,omitempty"`
	// Moves (confirmed and released) is how many times the ticket was
	// moved to another agent-minute by feasibility admission or a
	// re-plan: 0 where it was admitted. Only then does its id name the
	// key's slot; the tenant database row follows the record with the
	// most moves, so that a record delivered late never moves a row back.
	Moves int `json:"moves,omitempty"`
	// Moved: the ticket whose confirmed record this one replaced moved,
	// and where to (see SlotMove). Always set on SlotVacated; on a
	// confirmed or held record when the minute was freed for it.
	Moved *SlotMove `json:"moved,omitempty"`
	// Subject and Description (confirmed and released) are the ticket's
	// content (TicketEvent's): it travels with the ticket from admission
	// to its row, through every move and its cancel. "": none.
	Subject     string `json:"subject,omitempty"`
	Description string `json:"description,omitempty"`
}

// MovedRecord is rec (a ticket's confirmed record) moved to agent's
// minute, replacing revision prev of that key: the same ticket (its
// content too), one more move.
func MovedRecord(rec SlotRecord, agent string, minute time.Time, prev uint64) SlotRecord {
	out := rec
	out.Agent, out.SlotTime, out.Prev, out.Moved = agent, minute.UTC(), prev, nil
	out.Moves = rec.Moves + 1
	return out
}

// VacatedRecord frees the minute of rec (a ticket's confirmed record at
// revision prev) whose ticket moved to agent's minute.
func VacatedRecord(rec SlotRecord, agent string, minute time.Time, prev uint64) SlotRecord {
	return SlotRecord{State: SlotVacated, Tenant: rec.Tenant, Agent: rec.Agent, SlotTime: rec.SlotTime, Prev: prev,
		Type: rec.Type, CreatedAt: rec.CreatedAt,
		Moved: &SlotMove{Ticket: rec.Ticket, Agent: agent, SlotTime: minute.UTC()}}
}

// ConfirmedRecord is the record that admits ev (a created event) into its
// slot, replacing revision prev of the key (0: none).
func ConfirmedRecord(ev TicketEvent, prev uint64) SlotRecord {
	return SlotRecord{State: SlotConfirmed, Tenant: ev.Tenant, Agent: ev.Agent, SlotTime: ev.SlotTime.UTC(), Prev: prev,
		Type: ev.Type, CreatedAt: ev.CreatedAt, Ticket: ev.Ticket, Deadline: ev.Deadline,
		Subject: ev.Subject, Description: ev.Description}
}

// ReleasedRecord is the record that cancels ev's ticket at cancelledAt and
// frees its slot, replacing revision prev of the key.
func ReleasedRecord(ev TicketEvent, cancelledAt time.Time, prev uint64) SlotRecord {
	rec := ConfirmedRecord(ev, prev)
	rec.State = SlotReleased
	at := Stamp(cancelledAt)
	rec.CancelledAt = &at
	return rec
}

// Busy reports whether the record keeps its minute from a new
// reservation at now: a confirmed ticket, or a hold not yet expired.
func (r SlotRecord) Busy(now time.Time) bool {
	switch r.State {
	case SlotConfirmed:
		return true
	case SlotHeld:
		return r.HoldExpiresAt != nil && now.Before(*r.HoldExpiresAt)
	}
	return false
}

// HasTicket reports whether the record is a ticket's: confirmed, or
// released with a ticket (its cancel).
func (r SlotRecord) HasTicket() bool {
	return (r.State == SlotConfirmed || r.State == SlotReleased) && r.Ticket != ""
}

// Event is the ticket event a ticket's record stands for: created for a
// confirmed record, cancelled for a released one. Only for HasTicket.
func (r SlotRecord) Event() TicketEvent {
	ev := TicketEvent{Event: TicketCreated, Tenant: r.Tenant, Ticket: r.Ticket, Type: r.Type, Agent: r.Agent,
		SlotTime: r.SlotTime.UTC(), CreatedAt: r.CreatedAt, Deadline: r.Deadline,
		Subject: r.Subject, Description: r.Description}
	if r.State == SlotReleased {
		ev.Event = TicketCancelled
		ev.CancelledAt = r.CancelledAt
	}
	return ev
}

// DecodeSlotRecord is the one validator of a record read from a slot key:
// anyone with access to the bucket can write one. It decodes data (strict
// for CheckWritable: at most MaxSlotRecordBytes, no unknown member,
// nothing after the object) and checks it against key: a known state; a
// ticket's record must name key's tenant, agent and minute, carry a
// ticket id that names the same agent and minute, and, under
// CheckWritable, pass TicketEvent.Check as its event (its content
// bounded by CheckContent too); a hold must have an expiry, and only a
// ticket's record may carry content (CheckWritable). Every refusal wraps ErrInvalidSlot.
func DecodeSlotRecord(key string, data []byte, check TicketEventCheck) (SlotRecord, error) {
	var rec SlotRecord
	tenant, agent, minute, err := ParseSlotKey(key)
	if err != nil {
		return rec, err
	}
	if check == CheckWritable {
		if len(data) > MaxSlotRecordBytes {
			return rec, fmt.Errorf("%w: record of %d bytes, at most %d", ErrInvalidSlot, len(data), MaxSlotRecordBytes)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			return rec, fmt.Errorf("%w: json: %v", ErrInvalidSlot, err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return rec, fmt.Errorf("%w: data after the JSON object", ErrInvalidSlot)
		}
	} else if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("%w: json: %v", ErrInvalidSlot, err)
	}
	if rec.Moves < 0 {
		return rec, fmt.Errorf("%w: moves %d on %q", ErrInvalidSlot, rec.Moves, key)
	}
	if rec.Moved != nil {
		if err := checkMove(*rec.Moved); err != nil {
			return rec, fmt.Errorf("%w on %q", err, key)
		}
	}
	if check == CheckWritable && (rec.Subject != "" || rec.Description != "") && !rec.HasTicket() {
		return rec, fmt.Errorf("%w: content on a record of no ticket on %q", ErrInvalidSlot, key)
	}
	switch rec.State {
	case SlotHeld:
		if rec.HoldExpiresAt == nil {
			return rec, fmt.Errorf("%w: a hold without hold_expires_at on %q", ErrInvalidSlot, key)
		}
		return rec, nil
	case SlotVacated:
		if rec.Moved == nil || rec.Ticket != "" {
			return rec, fmt.Errorf("%w: a vacated record needs moved and no ticket on %q", ErrInvalidSlot, key)
		}
		return rec, nil
	case SlotReleased:
		if rec.Ticket == "" {
			return rec, nil // a minute freed without a ticket
		}
	case SlotConfirmed:
	default:
		return rec, fmt.Errorf("%w: state %q on %q", ErrInvalidSlot, rec.State, key)
	}
	if rec.Tenant != tenant || rec.Agent != agent || !rec.SlotTime.Equal(minute) {
		return rec, fmt.Errorf("%w: record of %s/%s/%s on key %q", ErrInvalidSlot, rec.Tenant, rec.Agent,
			rec.SlotTime.Format(time.RFC3339), key)
	}
	// A ticket's id names the slot it was admitted into; once moved it
	// names an older slot of the same tenant.
	if ta, tm, _, err := ParseTicketID(rec.Ticket); err != nil || (rec.Moves == 0 && (ta != agent || !tm.Equal(minute))) {
		return rec, fmt.Errorf("%w: ticket id %q does not name the slot of key %q", ErrInvalidSlot, rec.Ticket, key)
	}
	if rec.State == SlotReleased && rec.CancelledAt == nil {
		return rec, fmt.Errorf("%w: a released ticket without cancelled_at on %q", ErrInvalidSlot, key)
	}
	if check == CheckWritable {
		if err := rec.Event().Check(tenant, rec.Ticket); err != nil {
			return rec, fmt.Errorf("%w: %w", ErrInvalidSlot, err)
		}
	}
	return rec, nil
}

// checkMove validates a record's Moved: a slot ticket id and a slot.
func checkMove(m SlotMove) error {
	if _, _, _, err := ParseTicketID(m.Ticket); err != nil {
		return fmt.Errorf("%w: moved ticket %q", ErrInvalidSlot, m.Ticket)
	}
	if ValidID(m.Agent) != nil || m.SlotTime.IsZero() || !m.SlotTime.Equal(m.SlotTime.Truncate(time.Minute)) {
		return fmt.Errorf("%w: moved to %q at %s", ErrInvalidSlot, m.Agent, m.SlotTime.Format(time.RFC3339))
	}
	return nil
}

// TicketNonceLen is the length of the random part of a ticket id.
const TicketNonceLen = 16

// NewTicketNonce is the random part of a new ticket id. An
// Idempotency-Key's pending record fixes it before the slot is known.
func NewTicketNonce() string { return NewID("", TicketNonceLen) }

// ValidTicketNonce checks a ticket nonce as NewTicketNonce makes it.
func ValidTicketNonce(nonce string) error {
	if len(nonce) != TicketNonceLen || ValidID(nonce) != nil {
		return fmt.Errorf("%w: ticket nonce %q", ErrInvalidSlot, nonce)
	}
	return nil
}

// NewSlotTicketID is the id of a ticket in agent's minute:
// t<YYYYMMDDHHMM>-<agent>-<nonce>. It names the ticket's slot, so a
// ticket is read back from its slot key with one get (ParseTicketID),
// and nonce (TicketNonceLen characters, NewTicketNonce) tells it from any
// other ticket that minute has held. The id is at most MaxIDLen long as
// long as the agent id is at most MaxSlotAgentIDLen (every agent id tms
// makes is).
func NewSlotTicketID(agent string, minute time.Time, nonce string) (string, error) {
	if err := ValidTicketNonce(nonce); err != nil {
		return "", err
	}
	if len(agent) > MaxSlotAgentIDLen || ValidID(agent) != nil {
		return "", fmt.Errorf("%w: agent id %q cannot be part of a ticket id", ErrInvalidSlot, agent)
	}
	return "t" + formatMinute(minute) + "-" + agent + "-" + nonce, nil
}

// MaxSlotAgentIDLen is the longest agent id a ticket id can name.
const MaxSlotAgentIDLen = MaxIDLen - 1 - len(minuteLayout) - 2 - TicketNonceLen

// ParseTicketID is NewSlotTicketID's inverse. A ticket id that it cannot
// have produced (ids of an earlier version: "t" and 20 random characters)
// is ErrInvalidSlot: such a ticket is found only in its tenant database.
func ParseTicketID(id string) (agent string, minute time.Time, nonce string, err error) {
	const minLen = 1 + len(minuteLayout) + 1 + 1 + 1 + TicketNonceLen
	if len(id) < minLen || len(id) > MaxIDLen || id[0] != 't' || ValidID(id) != nil {
		return "", time.Time{}, "", fmt.Errorf("%w: ticket id %q", ErrInvalidSlot, id)
	}
	m, rest := id[1:1+len(minuteLayout)], id[1+len(minuteLayout):]
	if rest[0] != '-' || rest[len(rest)-TicketNonceLen-1] != '-' {
		return "", time.Time{}, "", fmt.Errorf("%w: ticket id %q", ErrInvalidSlot, id)
	}
	agent, nonce = rest[1:len(rest)-TicketNonceLen-1], rest[len(rest)-TicketNonceLen:]
	if ValidID(agent) != nil {
		return "", time.Time{}, "", fmt.Errorf("%w: ticket id %q", ErrInvalidSlot, id)
	}
	if minute, err = parseMinute(m); err != nil {
		return "", time.Time{}, "", err
	}
	return agent, minute, nonce, nil
}
