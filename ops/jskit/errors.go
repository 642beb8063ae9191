package jskit

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// CreateLost reports whether a KV Create failed because another writer got
// the key first. nats.go maps most such answers to jetstream.ErrKeyExists,
// but not all: a Create over a delete or purge marker is a read plus a CAS,
// and on a replicated bucket a lost CAS comes back as the raw API error
// 10164 (10071 on one node). Every caller that decides on "taken" must
// treat those alike, or a lost race reads as an outage.
func CreateLost(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || WrongLastSequence(err)
}

// WrongLastSequence reports a failed compare-and-set on a stream subject
// (a KV Update, or a publish with an expected last sequence): 10071 on one
// node, 10164 on a replicated stream.
func WrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
