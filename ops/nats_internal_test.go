package ops

import "testing"

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"2.9.10", false},
		{"2.10.22", false},
		{"1.99.99", false},
		{"2.11.0", true},
		{"v2.11.0-beta.1", true},
		{"2.12.1", true},
		{"2.15.2", true},
		{"3.0.0", true},
		{"", false},
		{"2.x.0", false},
		{"2.11", false},
	} {
		if err := checkVersion(tc.v); (err == nil) != tc.ok {
			t.Errorf("checkVersion(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
}
