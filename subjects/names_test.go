package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	t.Parallel()
	good := []string{"a", "c0", "client_1", "a-b_c", strings.Repeat("z", MaxIDLen)}
	for _, id := range good {
		if err := ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{"", "A", "a.b", "a*", ">", "a b", "a\x00", "é", strings.Repeat("z", MaxIDLen+1), "a/b", "a\n"}
	for _, id := range bad {
		if err := ValidID(id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidID(%q) = %v, want ErrInvalidID", id, err)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	cases := []struct{ got, want string }{
		{TenantKey("c1"), "tenant.c1"},
		{SubDomainKey("acme-corp"), "subdomain.acme-corp"},
		{AgentKey("c1", "a2"), "c1.a2"},
		{TenantAgents("c1"), "c1.*"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if EmailKey("Ops@Acme.example ") != EmailKey("ops@acme.example") {
		t.Error("EmailKey is not case- and space-insensitive")
	}
	if EmailKey("a@x.example") == EmailKey("b@x.example") {
		t.Error("EmailKey collides for different addresses")
	}
	if k := EmailKey("ops@acme.example"); !strings.HasPrefix(k, "email.") || len(k) != len("email.")+64 {
		t.Errorf("EmailKey = %q, want email.<64 hex>", k)
	}
}

func TestBuildersRefuseWildcards(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"*", ">", "a.b", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("TenantKey(%q) did not panic", id)
				}
			}()
			_ = TenantKey(id)
		}()
	}
}

func TestIdempotencySubject(t *testing.T) {
	t.Parallel()
	if got := IdempotencySubject("c1", "ab12"); got != "$KV.TMS_IDEMPOTENCY.c1.ab12" {
		t.Errorf("IdempotencySubject = %q", got)
	}
}
