package subjects

import (
	"errors"
	"strings"
	"testing"
	"time"
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

// TestNewIDs pins the format of every id tms makes (stored data and
// clients depend on it): its prefix, its length, its alphabet, and that
// it is a valid id; and that ids do not repeat.
func TestNewIDs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		prefix string
		length int
		newID  func() string
	}{
		{"NewTenantID", "c", 21, NewTenantID},
		{"NewAgentID", "a", 21, NewAgentID},
		{"NewTicketID", "t", 21, NewTicketID},
		{"NewHoldNonce", "", HoldNonceLen, NewHoldNonce},
		{"NewID(x, 6)", "x", 7, func() string { return NewID("x", 6) }},
		{"NewID(empty, 1)", "", 1, func() string { return NewID("", 1) }},
	} {
		seen := map[string]bool{}
		for range 1000 {
			id := c.newID()
			random := strings.TrimPrefix(id, c.prefix)
			if len(id) != c.length || !strings.HasPrefix(id, c.prefix) || ValidID(id) != nil ||
				strings.Trim(random, "abcdefghijklmnopqrstuvwxyz234567") != "" {
				t.Fatalf("%s = %q, want %q and %d characters of [a-z2-7]", c.name, id, c.prefix, c.length-len(c.prefix))
			}
			if c.length-len(c.prefix) >= 6 && seen[id] {
				t.Fatalf("%s repeated %q", c.name, id)
			}
			seen[id] = true
		}
	}
}

// TestStamp: UTC, to the microsecond, whatever the zone and the digits.
func TestStamp(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("x", 5*3600+1800)
	in := time.Date(2030, 1, 2, 8, 34, 5, 123456789, zone)
	got := Stamp(in)
	if want := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("Stamp(%v) = %v, want %v", in, got, want)
	}
	if s := FormatStamp(in); s != "2030-01-02T03:04:05.123456Z" {
		t.Errorf("FormatStamp = %q", s)
	}
	if s := FormatStamp(time.Date(2030, 1, 2, 3, 4, 5, 999, time.UTC)); s != "2030-01-02T03:04:05Z" {
		t.Errorf("FormatStamp of a sub-microsecond instant = %q", s)
	}
}
