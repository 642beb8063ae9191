package subjects

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestIdempotencySubject(t *testing.T) {
	t.Parallel()
	if got := IdempotencySubject("c1", "ab12"); got != "$KV.TMS_IDEMPOTENCY.c1.ab12" {
		t.Errorf("IdempotencySubject = %q", got)
	}
}

// TestIdempotencyRecordCompat: a record of the version before nonces (a
// pending one fixed the ticket id) decodes, and a new pending record
// carries its nonce and no ticket.
func TestIdempotencyRecordCompat(t *testing.T) {
	t.Parallel()
	old := `{"state":"pending","body_hash":"ab","ticket":"tabcdefghijklmnopqrst","created":"2030-01-02T03:04:05Z"}`
	var rec IdempotencyRecord
	if err := json.Unmarshal([]byte(old), &rec); err != nil {
		t.Fatal(err)
	}
	want := IdempotencyRecord{State: IdempotencyPending, BodyHash: "ab", Ticket: "tabcdefghijklmnopqrst",
		Created: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	if !reflect.DeepEqual(rec, want) {
		t.Errorf("old record decodes as %+v, want %+v", rec, want)
	}
	nonce := NewTicketNonce()
	data, err := json.Marshal(IdempotencyRecord{State: IdempotencyPending, BodyHash: "ab", Nonce: nonce, Created: want.Created})
	if err != nil {
		t.Fatal(err)
	}
	if got := `{"state":"pending","body_hash":"ab","nonce":"` + nonce + `","created":"2030-01-02T03:04:05Z"}`; string(data) != got {
		t.Errorf("pending record %s, want %s", data, got)
	}
}
