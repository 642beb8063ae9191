package subjects

import (
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
