package tenants

import (
	"strings"
	"testing"

	"tms/subjects"
)

func TestSlug(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Acme":                              "acme",
		"  Acme Support, Inc.  ":            "acme-support-inc",
		"--A--B--":                          "a-b",
		"Ünïcode Çorp":                      "unicode-corp",
		"###":                               "tenant",
		"":                                  "tenant",
		strings.Repeat("ab-", 30):           "ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-a",
		"x" + strings.Repeat(" ", 50) + "y": "x-y",
	} {
		got := slug(in)
		if got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
		if len(got) > maxSlugLen || subjects.ValidID(got) != nil || strings.HasSuffix(got, "-") {
			t.Errorf("slug(%q) = %q is not a valid sub_domain", in, got)
		}
	}
	long := slug(strings.Repeat("a", 60))
	for _, s := range []string{withSuffix(long, "2"), withSuffix(long, "123456"), withSuffix("acme", "2")} {
		if len(s) > maxSlugLen || subjects.ValidID(s) != nil {
			t.Errorf("withSuffix gave %q", s)
		}
	}
	if got := withSuffix(strings.Repeat("a", 37)+"-bc", "12"); got != strings.Repeat("a", 37)+"-12" {
		t.Errorf("withSuffix trims a dangling dash: %q", got)
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := subjects.NewTenantID()
		if len(id) != 21 || id[0] != 'c' || subjects.ValidID(id) != nil || seen[id] {
			t.Fatalf("NewTenantID = %q", id)
		}
		seen[id] = true
	}
}

func TestPasswordHash(t *testing.T) {
	t.Parallel()
	h, err := hashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not the PHC form with OWASP parameters", h)
	}
	if ok, err := verifyPassword(h, "correct horse battery"); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, err := verifyPassword(h, "correct horse batterz"); ok || err != nil {
		t.Errorf("wrong password: %v %v", ok, err)
	}
	h2, _ := hashPassword("correct horse battery")
	if h2 == h {
		t.Error("two hashes of one password are equal: salt not random")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=19456,t=2,p=1$!!$??"} {
		if _, err := verifyPassword(bad, "x"); err == nil {
			t.Errorf("verifyPassword accepted hash %q", bad)
		}
	}
}

func FuzzValidateAccount(f *testing.F) {
	f.Add("Acme", "ops@acme.example", "correct horse battery")
	f.Add(" ", "Bob <bob@x>", "short")
	f.Fuzz(func(t *testing.T, name, email, password string) {
		n, e, err := validateAccount(name, email, password)
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("non-field error %v", err)
			}
			return
		}
		if n == "" || e == "" || len(e) > maxEmailLen || subjects.ValidID(slug(n)) != nil {
			t.Fatalf("accepted %q %q -> %q %q (slug %q)", name, email, n, e, slug(n))
		}
		_ = subjects.EmailKey(e)
	})
}
