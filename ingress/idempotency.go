package ingress

import (
	"context"
	"net/http"

	"tms/ingress/admission"
)

// The Idempotency-Key header (docs/api.md) as both transports read it;
// what a key does is package admission's (admission/idempotency.go).
const (
	idempotencyHeader    = "Idempotency-Key"
	maxIdempotencyKeyLen = 128
)

// idempotencyKeyOf checks the Idempotency-Key values of a request (HTTP
// or NATS header): none is nil; one must be 1-128 printable ASCII
// characters.
func idempotencyKeyOf(values []string) (*string, error) {
	switch len(values) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, errInvalidField(idempotencyHeader, "header is given %d times; give it once", len(values))
	}
	v := values[0]
	if len(v) == 0 || len(v) > maxIdempotencyKeyLen {
		return nil, errInvalidField(idempotencyHeader, "header must be 1-%d printable ASCII characters (got %d bytes)",
			maxIdempotencyKeyLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return nil, errInvalidField(idempotencyHeader, "header must be 1-%d printable ASCII characters (byte %d is 0x%02x)",
				maxIdempotencyKeyLen, i, c)
		}
	}
	return &v, nil
}

// replayedHeader marks an answer replayed from an Idempotency-Key: the
// 201 remembered for the key, not a ticket this request admitted. A first
// answer has no such header. The NATS API sends it as a header of the
// reply.
const replayedHeader = "Idempotent-Replayed"

// markReplays returns ctx with a function admission calls when the
// answer is a replay (admission.OnReplay), setting replayedHeader on w:
// the header is in place before the handler writes the 201. Only a
// request with an Idempotency-Key can be a replay.
func markReplays(ctx context.Context, w http.ResponseWriter, key *string) context.Context {
	if key == nil {
		return ctx
	}
	h := w.Header()
	return admission.OnReplay(ctx, func() { h.Set(replayedHeader, "true") })
}
