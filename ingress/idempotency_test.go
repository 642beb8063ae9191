package ingress

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestIdempotencyKeyOf(t *testing.T) {
	t.Parallel()
	if k, err := idempotencyKeyOf(nil); k != nil || err != nil {
		t.Errorf("no header = %v, %v", k, err)
	}
	for _, good := range []string{"a", " ", "order-42 / retry #3", strings.Repeat("~", maxIdempotencyKeyLen)} {
		if k, err := idempotencyKeyOf([]string{good}); err != nil || k == nil || *k != good {
			t.Errorf("%q = %v, %v", good, k, err)
		}
	}
	for _, bad := range [][]string{{""}, {strings.Repeat("k", maxIdempotencyKeyLen+1)}, {"tab\there"}, {"é"}, {"\x7f"}, {"a", "a"}} {
		_, err := idempotencyKeyOf(bad)
		ae, ok := errors.AsType[*apiError](err)
		if !ok || ae.status != http.StatusBadRequest || ae.code != codeInvalidField || !strings.Contains(ae.message, idempotencyHeader) {
			t.Errorf("%q = %v, want 400 invalid_field naming the header", bad, err)
		}
	}
}

func TestNATSReplyAddsCode(t *testing.T) {
	t.Parallel()
	var got map[string]any
	if err := json.Unmarshal(natsReply(201, ticketStatusBody{Status: "allocated", TicketID: "t1"}), &got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"status": "allocated", "ticket_id": "t1", "code": float64(201)}; !reflect.DeepEqual(got, want) {
		t.Errorf("natsReply = %v, want %v", got, want)
	}
	if err := json.Unmarshal(natsReply(201, json.RawMessage(`{"status":"accepted"}`)), &got); err != nil || got["code"] != float64(201) {
		t.Errorf("natsReply of a stored answer = %v, %v", got, err)
	}
}
