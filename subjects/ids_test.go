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
