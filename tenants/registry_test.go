package tenants_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
)

func TestCreateAccountAndAuthenticate(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)

	ten := e.createAccount(t, "  Acme Support, Inc.  ", "Ops@Acme.example")
	if err := subjects.ValidID(ten.ID); err != nil || !strings.HasPrefix(ten.ID, "c") || len(ten.ID) != 21 {
		t.Errorf("client id %q: want c + 20 base32 characters (%v)", ten.ID, err)
	}
	if ten.Name != "Acme Support, Inc." || ten.Email != "Ops@Acme.example" || ten.SubDomain != "acme-support-inc" {
		t.Errorf("tenant = %+v", ten)
	}
	if ten.DBServer != "127.0.0.1:5432" || ten.DBName != e.prefix+ten.ID || ten.CreatedAt.IsZero() {
		t.Errorf("placement = %q %q, created %v", ten.DBServer, ten.DBName, ten.CreatedAt)
	}

	// Read-your-writes: no waiting for the watch.
	got, err := e.reg.Get(ctx, ten.ID)
	if err != nil || got != ten {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, ten)
	}
	got, err = e.reg.Authenticate(ctx, ten.ID, "correct horse battery")
	if err != nil || got.ID != ten.ID {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	for _, c := range []struct{ id, password string }{
		{ten.ID, "wrong horse battery"},
		{ten.ID, ""},
		{"cunknownunknownunknow", "correct horse battery"},
		{"../etc", "correct horse battery"},
		{"tenant.*", "correct horse battery"},
		{"", "correct horse battery"},
	} {
		if _, err := e.reg.Authenticate(ctx, c.id, c.password); !errors.Is(err, tenants.ErrInvalidCredentials) {
			t.Errorf("Authenticate(%q, %q) = %v, want ErrInvalidCredentials", c.id, c.password, err)
		}
	}
	for _, id := range []string{"cunknownunknownunknow", "a.b", ""} {
		if _, err := e.reg.Get(ctx, id); !errors.Is(err, tenants.ErrTenantNotFound) {
			t.Errorf("Get(%q) = %v, want ErrTenantNotFound", id, err)
		}
	}

	// The claims were confirmed: their last revision carries no TTL.
	stream, err := e.js.Stream(ctx, "KV_"+subjects.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{subjects.EmailKey("ops@acme.example"), subjects.SubDomainKey(ten.SubDomain)} {
		msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+subjects.BucketTenants+"."+key)
		if err != nil {
			t.Fatalf("claim %s: %v", key, err)
		}
		if ttl := msg.Header.Get("Nats-TTL"); ttl != "" {
			t.Errorf("claim %s still has TTL %s", key, ttl)
		}
	}

	for _, email := range []string{"Ops@Acme.example", "ops@acme.example", " OPS@ACME.EXAMPLE "} {
		if _, err := e.reg.CreateAccount(ctx, "Other", email, "another password"); !errors.Is(err, tenants.ErrEmailTaken) {
			t.Errorf("CreateAccount with e-mail %q = %v, want ErrEmailTaken", email, err)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return e.reg.Len() == 1 }, "one tenant in the query model")
}

func TestCreateAccountRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 30*time.Second)
	long := strings.Repeat("x", 201)
	for _, c := range []struct{ name, email, password, field string }{
		{"", "a@example.com", "long enough pw", "client_name"},
		{"   ", "a@example.com", "long enough pw", "client_name"},
		{long, "a@example.com", "long enough pw", "client_name"},
		{"tab\tname", "a@example.com", "long enough pw", "client_name"},
		{"Acme", "", "long enough pw", "official_email"},
		{"Acme", "not-an-email", "long enough pw", "official_email"},
		{"Acme", "Bob <bob@example.com>", "long enough pw", "official_email"},
		{"Acme", "a@b@c", "long enough pw", "official_email"},
		{"Acme", strings.Repeat("a", 250) + "@example.com", "long enough pw", "official_email"},
		{"Acme", "a@example.com", "short", "password"},
		{"Acme", "a@example.com", "123456789", "password"},
		{"Acme", "a@example.com", strings.Repeat("p", 1025), "password"},
		// Control characters (Unicode Cc), C0, DEL and C1 alike.
		{"Acme", "a@example.com", "long enough\u0000pw", "password"},
		{"Acme", "a@example.com", "long enough\u0007\u001bpw", "password"},
		{"Acme", "a@example.com", "long enough pw\n", "password"},
		{"Acme", "a@example.com", "long enough\u007fpw", "password"},
		{"Acme", "a@example.com", "long enough\u0085pw", "password"},
	} {
		_, err := e.reg.CreateAccount(ctx, c.name, c.email, c.password)
		var fe *tenants.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("CreateAccount(%.20q, %.30q, %.12q) = %v, want a FieldError for %s", c.name, c.email, c.password, err, c.field)
		}
	}
	kv, err := e.js.KeyValue(ctx, subjects.BucketTenants)
	if err != nil {
		t.Fatal(err)
	}
	if keys := listKeys(t, kv); len(keys) != 0 {
		t.Errorf("bad input left keys behind: %v", keys)
	}
}

func TestSubDomainsAreUnique(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	a := e.createAccount(t, "Globex", "one@globex.example")
	b := e.createAccount(t, "GLOBEX!", "two@globex.example")
	c := e.createAccount(t, "###", "three@globex.example")
	if a.SubDomain != "globex" || b.SubDomain != "globex-2" || c.SubDomain != "tenant" {
		t.Errorf("sub_domains = %q, %q, %q; want globex, globex-2, tenant", a.SubDomain, b.SubDomain, c.SubDomain)
	}
}

func TestSecondProcessSeesTenantsAndLogouts(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	s1 := e.Sessions()

	// A second process: its own connection, registry and sessions.
	js2 := e.nats.JetStream(t)
	reg2 := tenantstest.StartRegistry(t, tenants.RegistryConfig{JS: js2})
	s2 := tenantstest.StartSessions(t, tenants.SessionsConfig{JS: js2})

	ten := e.createAccount(t, "Initech", "bill@initech.example")
	testkit.Eventually(t, 5*time.Second, func() bool { return reg2.Len() == 1 }, "second registry sees the tenant")
	if got, err := reg2.Authenticate(ctx, ten.ID, "correct horse battery"); err != nil || got != ten {
		t.Fatalf("second registry Authenticate = %+v, %v", got, err)
	}

	token, expires, err := s1.Issue(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("expires in %v, want about 24h", d)
	}
	other, _, err := s1.Issue(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*tenants.Sessions{s1, s2} {
		if id, err := s.Authenticate(ctx, token); err != nil || id != ten.ID {
			t.Fatalf("Authenticate = %q, %v", id, err)
		}
	}
	if err := s1.Revoke(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Authenticate(ctx, token); !errors.Is(err, tenants.ErrUnauthenticated) {
		t.Errorf("revoking process still accepts the token: %v", err)
	}
	start := time.Now()
	testkit.Eventually(t, time.Second, func() bool {
		_, err := s2.Authenticate(ctx, token)
		return errors.Is(err, tenants.ErrUnauthenticated)
	}, "second process refuses the revoked token")
	t.Logf("revocation seen by the second process after %v", time.Since(start))
	if id, err := s2.Authenticate(ctx, other); err != nil || id != ten.ID {
		t.Errorf("other session of the tenant = %q, %v; want it still valid", id, err)
	}
}

func TestRestartKeepsTenantsAndSessions(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	s1 := e.Sessions()
	ten := e.createAccount(t, "Umbrella", "red@umbrella.example")
	token, _, err := s1.Issue(ctx, ten.ID)
	if err != nil {
		t.Fatal(err)
	}

	e.nats.Restart()

	js := e.nats.JetStream(t)
	reg := tenantstest.StartRegistry(t, tenants.RegistryConfig{JS: js, Provisioner: e.prov})
	s := tenantstest.StartSessions(t, tenants.SessionsConfig{JS: js})
	if reg.Len() != 1 {
		t.Errorf("registry after restart has %d tenants, want 1", reg.Len())
	}
	if got, err := reg.Authenticate(ctx, ten.ID, "correct horse battery"); err != nil || got != ten {
		t.Errorf("Authenticate after restart = %+v, %v", got, err)
	}
	if id, err := s.Authenticate(ctx, token); err != nil || id != ten.ID {
		t.Errorf("session after restart = %q, %v", id, err)
	}
	// The e-mail claim survived too.
	if _, err := reg.CreateAccount(ctx, "Other", "RED@umbrella.example", "another password"); !errors.Is(err, tenants.ErrEmailTaken) {
		t.Errorf("CreateAccount with the same e-mail after restart = %v, want ErrEmailTaken", err)
	}
	// The first registry rode out the restart and still serves.
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, err := e.reg.Get(ctx, ten.ID)
		return err == nil
	}, "first registry serves after the restart")
}

func TestSessionExpiryAndMalformedTokens(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	clock := testkit.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := tenantstest.StartSessions(t, tenants.SessionsConfig{JS: js, Now: clock.Now, TTL: time.Hour})
	ctx := testkit.Context(t, 30*time.Second)

	token, expires, err := s.Issue(ctx, "ctenant")
	if err != nil {
		t.Fatal(err)
	}
	if !expires.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("expires %v, want %v", expires, clock.Now().Add(time.Hour))
	}
	if len(token) != 43 {
		t.Errorf("token %q: want 43 characters of base64url", token)
	}
	clock.Advance(59 * time.Minute)
	if id, err := s.Authenticate(ctx, token); err != nil || id != "ctenant" {
		t.Fatalf("Authenticate before expiry = %q, %v", id, err)
	}
	clock.Advance(time.Minute)
	if _, err := s.Authenticate(ctx, token); !errors.Is(err, tenants.ErrUnauthenticated) {
		t.Errorf("Authenticate at expiry = %v, want ErrUnauthenticated", err)
	}

	if _, _, err := s.Issue(ctx, "bad.tenant"); err == nil {
		t.Error("Issue for a malformed tenant id succeeded")
	}
	flipped := []byte(token)
	flipped[0] ^= 1
	for _, bad := range []string{"", "x", strings.Repeat("A", 43), string(flipped), token + "A", token[:42] + "=",
		token[:42] + ".", strings.Repeat("é", 22), "s.*", strings.Repeat("a", 1<<16)} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, tenants.ErrUnauthenticated) {
			t.Errorf("Authenticate(%.20q) = %v, want ErrUnauthenticated", bad, err)
		}
	}
	if err := s.Revoke(ctx, "not a token"); !errors.Is(err, tenants.ErrUnauthenticated) {
		t.Errorf("Revoke(malformed) = %v, want ErrUnauthenticated", err)
	}
}

func listKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("list keys: %v", err)
	}
	return keys
}
