package subjects

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Operations: the configuration every worker watches, and the request
// `tms ops` sends to every worker at once to see them.

// BucketOps holds the live configuration of the workers, written by
// `tms ops workers scale` and watched by every allocator process, so a
// change takes effect without a restart.
const BucketOps = "TMS_OPS"

// KeyAllocatorSettings is the BucketOps key of the allocators' settings
// (AllocatorSettings). Deleted or never written: each process keeps its
// own --alloc-concurrency.
const KeyAllocatorSettings = "allocator"

// OpsBucketConfig is the configuration of BucketOps; whichever of the
// workers and `tms ops` comes first creates it.
func OpsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketOps,
		Description: "tms live configuration of the workers (tms ops workers scale)",
		History:     8,
		Storage:     jetstream.FileStorage,
		Replicas:    replicasOr1(replicas),
	}
}

// Bounds of the allocators' concurrency: tenants one process writes at
// once, one batch each (every one may hold a database connection).
const (
	MinAllocConcurrency = 1
	MaxAllocConcurrency = 256
)

// AllocatorSettings is the value under KeyAllocatorSettings.
type AllocatorSettings struct {
	// Concurrency is how many tenants each allocator process writes at
	// once, MinAllocConcurrency..MaxAllocConcurrency.
	Concurrency int `json:"concurrency"`
	// UpdatedAt and UpdatedBy say when and from where (user@host of
	// `tms ops`) it was set, for the operators reading it.
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by,omitempty"`
}

// Validate checks the settings' bounds.
func (s AllocatorSettings) Validate() error {
	if s.Concurrency < MinAllocConcurrency || s.Concurrency > MaxAllocConcurrency {
		return fmt.Errorf("%w: allocator concurrency %d, want %d..%d", ErrInvalidOps, s.Concurrency, MinAllocConcurrency, MaxAllocConcurrency)
	}
	if len(s.UpdatedBy) > 256 {
		return fmt.Errorf("%w: updated_by of %d bytes", ErrInvalidOps, len(s.UpdatedBy))
	}
	return nil
}

// ErrInvalidOps is a live configuration value or worker answer that does
// not decode or is out of bounds (anyone with access to the bucket can
// write one: a worker logs it and keeps its settings).
var ErrInvalidOps = fmt.Errorf("invalid operations value")

// maxOpsValue bounds what DecodeAllocatorSettings and DecodeWorkerInfo
// read.
const maxOpsValue = 16 << 10

// EncodeAllocatorSettings is the JSON stored under KeyAllocatorSettings.
func EncodeAllocatorSettings(s AllocatorSettings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// DecodeAllocatorSettings reads a value back: strict JSON (no unknown
// fields, one object), within the bounds.
func DecodeAllocatorSettings(data []byte) (AllocatorSettings, error) {
	var s AllocatorSettings
	if err := decodeOpsStrict(data, &s); err != nil {
		return AllocatorSettings{}, err
	}
	return s, s.Validate()
}

func decodeOpsStrict(data []byte, v any) error {
	if len(data) > maxOpsValue {
		return fmt.Errorf("%w: %d bytes", ErrInvalidOps, len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOps, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the object", ErrInvalidOps)
	}
	return nil
}

// SubjectWorkersInfo is the request every worker process answers (plain
// subscription, not a queue group: each one answers) with its WorkerInfo.
// `tms ops` sends it with a reply inbox and gathers the answers for a
// moment. The request's body is ignored.
const SubjectWorkersInfo = "tms.ops.workers.info"

// Where a worker's allocator concurrency came from.
const (
	ConcurrencyFromFlag = "flag" // its --alloc-concurrency (or the default)
	ConcurrencyFromOps  = "ops"  // KeyAllocatorSettings
)

// WorkerInfo is one worker process's answer to SubjectWorkersInfo.
type WorkerInfo struct {
	// ID names the process for as long as it runs: host, pid and a
	// random part.
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Command string    `json:"command"` // serve or worker
	Started time.Time `json:"started"`
	// Concurrency is the allocators' concurrency in force now, and
	// ConcurrencySource where it came from (ConcurrencyFrom*);
	// SettingsRevision is the BucketOps revision applied (0: none).
	Concurrency       int    `json:"concurrency"`
	ConcurrencySource string `json:"concurrency_source"`
	SettingsRevision  uint64 `json:"settings_revision"`
	// BatchSize is --alloc-batch.
	BatchSize int `json:"batch_size"`
	// InFlight is the records pulled and not yet settled; Settled all
	// settled since start (written, parked or dead-lettered); Rate the
	// settled a second over the last RateWindow.
	// Writing is the tenant batches being written at this moment (at
	// most Concurrency).
	Writing    int           `json:"writing"`
	InFlight   int           `json:"in_flight"`
	Settled    uint64        `json:"settled"`
	Rate       float64       `json:"rate"`
	RateWindow time.Duration `json:"rate_window"`
	// TenantsDown is the tenants whose database this process cannot
	// reach now.
	TenantsDown int `json:"tenants_down"`
}

// EncodeWorkerInfo is a worker's answer.
func EncodeWorkerInfo(w WorkerInfo) ([]byte, error) { return json.Marshal(w) }

// DecodeWorkerInfo reads an answer (anyone may answer on the subject).
func DecodeWorkerInfo(data []byte) (WorkerInfo, error) {
	var w WorkerInfo
	if err := decodeOpsStrict(data, &w); err != nil {
		return WorkerInfo{}, err
	}
	if w.ID == "" || len(w.ID) > 256 || w.Concurrency < 0 || w.Writing < 0 || w.InFlight < 0 || w.Rate < 0 {
		return WorkerInfo{}, fmt.Errorf("%w: worker info %q", ErrInvalidOps, w.ID)
	}
	return w, nil
}

// HeaderReplayOf marks a dead letter's record put back by
// `tms ops dlq replay`: the dead-letter stream sequence it came from. The
// replayed record is published to the parked stream (ParkedSubject, with
// the dead letter's HeaderOriginalSubject and HeaderOriginalSequence),
// whose consumer writes it like any parked record, under the message id
// ReplayMsgID (a second replay of the same dead letter within the
// stream's duplicate window is dropped; after it, the write is idempotent
// all the same). If it fails again it is dead-lettered again under a new
// id (that of its parked sequence), never dropped as a duplicate of the
// first.
const HeaderReplayOf = "Tms-Replay-Of"

// ReplayMsgID is the message id of the replay of dead letter seq.
func ReplayMsgID(dlqSeq uint64) string { return fmt.Sprintf("replay-%s-%d", StreamDeadLetters, dlqSeq) }
