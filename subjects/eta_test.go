package subjects

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestETAReplyErrMapsEveryCode pins the contract: each code's wire string,
// the HTTP status an older asker decides on, and the sentinel Err gives,
// both for the reply as built and after a trip over the wire.
func TestETAReplyErrMapsEveryCode(t *testing.T) {
	t.Parallel()
	sentinels := []error{ErrETABadRequest, ErrETATenantNotFound, ErrETANoSlot, ErrETATypeMismatch, ErrETAHoldGone,
		ErrETAUnavailable, ErrETANonceReleased, ErrETAProtocol}
	for _, tt := range []struct {
		code, wire string
		status     int
		sentinel   error
	}{
		{ETACodeInvalidJSON, "invalid_json", 400, ErrETABadRequest},
		{ETACodeUnknownField, "unknown_field", 400, ErrETABadRequest},
		{ETACodeInvalidField, "invalid_field", 400, ErrETABadRequest},
		{ETACodeTenantMismatch, "tenant_mismatch", 400, ErrETABadRequest},
		{ETACodeBodyTooLarge, "body_too_large", 400, ErrETABadRequest},
		{ETACodeTenantNotFound, "client_not_found", 404, ErrETATenantNotFound},
		{ETACodeNoSlot, "sla_unavailable", 409, ErrETANoSlot},
		{ETACodeTypeMismatch, "type_mismatch", 409, ErrETATypeMismatch},
		{ETACodeHoldGone, "hold_expired", 410, ErrETAHoldGone},
		{ETACodeUnavailable, "unavailable", 503, ErrETAUnavailable},
		{ETACodeNonceReleased, "nonce_released", 409, ErrETANonceReleased},
	} {
		if tt.code != tt.wire {
			t.Errorf("code %q is on the wire as %q: the string must not change", tt.code, tt.wire)
		}
		if !slices.Contains(ETACodes(), tt.code) {
			t.Errorf("ETACodes() lacks %q", tt.code)
		}
		built := ETARefusal(tt.code, "slot_id", "why")
		if built.Code != tt.status || built.Error != tt.code || built.Field != "slot_id" || built.Message != "why" {
			t.Errorf("ETARefusal(%q) = %+v, want status %d", tt.code, built, tt.status)
		}
		data, err := json.Marshal(built)
		if err != nil {
			t.Fatal(err)
		}
		var decoded ETAReply
		if err := json.Unmarshal(data, &decoded); err != nil {
			t.Fatal(err)
		}
		for _, reply := range []ETAReply{built, decoded} {
			err := reply.Err()
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.sentinel) {
					t.Errorf("%q: Err() = %v; errors.Is(%v) = %v", tt.code, err, s, errors.Is(err, s))
				}
			}
			var ee *ETAError
			if !errors.As(err, &ee) || ee.Code != tt.code || ee.Status != tt.status || ee.Field != "slot_id" || ee.Message != "why" {
				t.Errorf("%q: Err() = %#v, want an *ETAError carrying the reply", tt.code, err)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, tt.code) || !strings.Contains(msg, "slot_id") || !strings.Contains(msg, "why") {
				t.Errorf("%q: Err().Error() = %q, want code, field and message in it", tt.code, msg)
			}
		}
	}
	if got, want := len(ETACodes()), 11; got != want {
		t.Errorf("ETACodes() has %d codes, the table %d: a new code needs its row here", got, want)
	}
}

// TestETAReplyErrNeverTakesTheUnknownForSuccess: only a reply without a
// code and with a 2xx status is a success; an unknown code, whatever its
// status, and a codeless non-2xx are protocol errors.
func TestETAReplyErrNeverTakesTheUnknownForSuccess(t *testing.T) {
	t.Parallel()
	for _, ok := range []ETAReply{{Code: ETAOK}, {Code: ETACreated, Agent: "a1"}} {
		if err := ok.Err(); err != nil {
			t.Errorf("%+v.Err() = %v, want nil", ok, err)
		}
	}
	for _, bad := range []ETAReply{
		{Code: 200, Error: "no_slot"},
		{Code: 409, Error: "no_slot"},
		{Code: 201, Error: "SLA_UNAVAILABLE"},
		{Code: 503, Error: " unavailable"},
		{},
		{Code: 500},
		{Code: 409, Message: "no code"},
		{Code: 302},
	} {
		err := bad.Err()
		if !errors.Is(err, ErrETAProtocol) || errors.Is(err, ErrETANoSlot) || errors.Is(err, ErrETAUnavailable) {
			t.Errorf("%+v.Err() = %v, want ErrETAProtocol only", bad, err)
		}
	}
	// A responder that names a code the contract lacks refuses as
	// unavailable rather than inventing a status.
	if r := ETARefusal("no_slot", "", "m"); r.Code != 503 || r.Error != ETACodeUnavailable || !errors.Is(r.Err(), ErrETAUnavailable) {
		t.Errorf(`ETARefusal("no_slot") = %+v, want the unavailable refusal`, r)
	}
}

// TestETARequestWire pins the members of the one-write protocol on the
// wire: a reserve's nonce and takeover, a reply's ticket, and nothing
// for what a request leaves out.
func TestETARequestWire(t *testing.T) {
	t.Parallel()
	nonce := NewTicketNonce()
	data, err := json.Marshal(ETARequest{Op: ETAReserve, Tenant: "c1", Type: Gold, Nonce: nonce, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"op":"reserve","tenant":"c1","type":"GOLD","nonce":"` + nonce + `","takeover":true}`; string(data) != want {
		t.Errorf("reserve on the wire: %s, want %s", data, want)
	}
	data, err = json.Marshal(ETARequest{Op: ETARelease, Tenant: "c1", Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"op":"release","tenant":"c1","nonce":"` + nonce + `"}`; string(data) != want {
		t.Errorf("release by nonce on the wire: %s, want %s", data, want)
	}
	var reply ETAReply
	if err := json.Unmarshal([]byte(`{"code":201,"ticket":"t203005061000-a1-abcdefghijklmnop","agent":"a1"}`), &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Ticket != "t203005061000-a1-abcdefghijklmnop" || reply.Err() != nil {
		t.Errorf("reply %+v: want its ticket and a success", reply)
	}
}
