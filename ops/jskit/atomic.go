package jskit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVStream is the name of the stream behind a KV bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject is the subject a KV bucket stores key under.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// EnableAtomicPublish turns on atomic batch publishing (server 2.12+) on
// stream when it is off. A KV bucket's configuration has no such setting,
// and jetstream.UpdateKeyValue rewrites the stream's configuration with it
// off: whoever updates a bucket calls this after.
func EnableAtomicPublish(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return nil
	}
	cfg.AllowAtomicPublish = true
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// AtomicPublishDisabled reports a batch refused because the stream does
// not allow atomic publishing (someone rewrote its configuration).
func AtomicPublishDisabled(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeAtomicPublishDisabled
}

// errCodeAtomicPublishDisabled is the server's JSAtomicPublishDisabledErr;
// nats.go 1.55 has no constant for it.
const errCodeAtomicPublishDisabled jetstream.ErrorCode = 10174

// KVWrite is one write of an atomic KV batch: value under key, only if the
// key's newest record is at revision Prev (0: the key has no record).
type KVWrite struct {
	Key   string
	Value []byte
	Prev  uint64
}

// WriteKVBatch stores writes into bucket as one atomic batch (ADR-50): all
// of them, in order, or none. Every write is checked against its Prev, and
// one failed check refuses the whole batch (CreateLost then holds: another
// writer got a key first). It returns each write's revision. The stream
// must allow atomic publishing (EnableAtomicPublish).
//
// Every message goes out on nc, so that they reach the server in order
// (staged messages and the commit on two connections could overtake each
// other: an incomplete batch). The messages before the last are published
// without waiting; the last carries the commit, and its acknowledgement
// carries the batch's last sequence, the batch being stored as
// consecutive sequences.
func WriteKVBatch(ctx context.Context, nc *nats.Conn, bucket string, writes []KVWrite) ([]uint64, error) {
	if len(writes) == 0 {
		return nil, nil
	}
	id := nats.NewInbox()[len(nats.InboxPrefix):] // unique, well under the 64-character limit
	var commit *nats.Msg
	for i, w := range writes {
		msg := nats.NewMsg(KVSubject(bucket, w.Key))
		msg.Data = w.Value
		msg.Header.Set("Nats-Batch-Id", id)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.Prev, 10))
		if i == len(writes)-1 {
			msg.Header.Set("Nats-Batch-Commit", "1")
			commit = msg
			break
		}
		if err := nc.PublishMsg(msg); err != nil {
			return nil, fmt.Errorf("staging write %d of batch %s: %w", i+1, id, err)
		}
	}
	resp, err := nc.RequestMsgWithContext(ctx, commit)
	if err != nil {
		return nil, fmt.Errorf("committing batch %s: %w", id, err)
	}
	var ack struct {
		Sequence uint64              `json:"seq"`
		Error    *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return nil, fmt.Errorf("batch %s: acknowledgement %q: %w", id, resp.Data, err)
	}
	if ack.Error != nil {
		return nil, ack.Error
	}
	if ack.Sequence < uint64(len(writes)) {
		return nil, fmt.Errorf("batch %s: commit acknowledged at sequence %d for %d writes", id, ack.Sequence, len(writes))
	}
	revs := make([]uint64, len(writes))
	for j := range revs {
		revs[j] = ack.Sequence - uint64(len(writes)-1-j)
	}
	return revs, nil
}
