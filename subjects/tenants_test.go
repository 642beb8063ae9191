package subjects

import (
	"errors"
	"strings"
	"testing"
)

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

// TestKeyParsers: each parser is its builder's inverse and refuses every
// key its builder cannot have produced, so a key written by anyone else
// into a bucket is never taken for one of ours.
func TestKeyParsers(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("z", MaxIDLen)
	for _, id := range []string{"c1", "a-b_c", long} {
		if got, err := ParseTenantKey(TenantKey(id)); err != nil || got != id {
			t.Errorf("ParseTenantKey(TenantKey(%q)) = %q %v", id, got, err)
		}
		if got, err := ParseSessionKey(SessionKey(id)); err != nil || got != id {
			t.Errorf("ParseSessionKey(SessionKey(%q)) = %q %v", id, got, err)
		}
		if tenant, agent, err := ParseAgentKey(AgentKey(id, "a2")); err != nil || tenant != id || agent != "a2" {
			t.Errorf("ParseAgentKey(AgentKey(%q, a2)) = %q %q %v", id, tenant, agent, err)
		}
	}
	for _, bad := range []string{"", "tenant.", "tenant.C1", "tenant.c1.x", "tenant.*", "email.ab", "subdomain.acme",
		"tenantc1", "s.ab", "tenant." + long + "z"} {
		if _, err := ParseTenantKey(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseTenantKey(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	for _, bad := range []string{"", "s.", "s.AB", "s.ab.cd", "s.*", "tenant.c1", "sab", "x.ab"} {
		if _, err := ParseSessionKey(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseSessionKey(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	for _, bad := range []string{"", "c1", "c1.", ".a1", "c1.a1.x", "C1.a1", "c1.A1", "c1.*", "c1." + long + "z"} {
		if _, _, err := ParseAgentKey(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseAgentKey(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
}
