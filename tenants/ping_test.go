package tenants_test

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/tenants"
)

// TestPingSaysWhatIsWrong: a server that answers but does not know the
// role or the database is ErrPostgresRefused with the server's reason, so
// nobody is told to start a server that runs; a closed port is
// ErrUnavailable.
func TestPingSaysWhatIsWrong(t *testing.T) {
	t.Parallel()
	refused := testkit.Refused(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there any more
	down, err := url.Parse(testkit.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	down.Host = closed

	for _, tc := range []struct {
		name, url string
		refused   bool
		want      string
	}{
		{"no such role", refused.NoRole, true, refused.NoRoleReason},
		{"no such database", refused.NoDatabase, true, refused.NoDatabaseReason},
		{"nothing listens", down.String(), false, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tenants.NewProvisioner(tenants.ProvisionerConfig{ServerURLs: []string{tc.url}, Logger: testkit.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			err = p.Ping(testkit.Context(t, 20*time.Second))
			if err == nil {
				t.Fatal("Ping succeeded")
			}
			if errors.Is(err, tenants.ErrPostgresRefused) != tc.refused || errors.Is(err, tenants.ErrUnavailable) == tc.refused {
				t.Fatalf("Ping: %v; want refused=%v, unavailable=%v", err, tc.refused, !tc.refused)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ping: %v; want it to say %s", err, tc.want)
			}
		})
	}
}
