package jskit

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestCreateLost(t *testing.T) {
	t.Parallel()
	r1 := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence: 7"}
	r3 := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}
	lost := []error{jetstream.ErrKeyExists, fmt.Errorf("creating: %w", jetstream.ErrKeyExists), r1, r3, fmt.Errorf("x: %w", r3)}
	for _, err := range lost {
		if !CreateLost(err) {
			t.Errorf("CreateLost(%v) = false", err)
		}
	}
	other := []error{nil, errors.New("boom"), jetstream.ErrKeyNotFound, jetstream.ErrNoStreamResponse,
		&jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled}}
	for _, err := range other {
		if CreateLost(err) {
			t.Errorf("CreateLost(%v) = true", err)
		}
	}
	if !WrongLastSequence(r3) || WrongLastSequence(jetstream.ErrKeyNotFound) {
		t.Error("WrongLastSequence misclassifies")
	}
}
