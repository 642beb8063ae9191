package main

import "testing"

// TestLocalSSLMode: a --database-url without sslmode connects without
// TLS only when every host is on this machine; a URL that names sslmode,
// or a PGSSLMODE in the environment, is left as it is, and so is any
// URL with a remote host (the pgx default, prefer).
func TestLocalSSLMode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, pgsslmode, want string }{
		{defaultDatabaseURL, "", defaultDatabaseURL + "?sslmode=disable"},
		{"postgres://postgres@localhost/postgres", "", "postgres://postgres@localhost/postgres?sslmode=disable"},
		{"postgres://postgres@[::1]:5433/postgres?connect_timeout=5", "", "postgres://postgres@[::1]:5433/postgres?connect_timeout=5&sslmode=disable"},
		{"postgres://postgres@127.0.0.1:5432,localhost:5433/postgres", "", "postgres://postgres@127.0.0.1:5432,localhost:5433/postgres?sslmode=disable"},
		{"postgres:///postgres?host=/var/run/postgresql", "", "postgres:///postgres?host=/var/run/postgresql&sslmode=disable"},
		// Remote, or one remote host among loopback ones: prefer.
		{"postgres://tms:pw@db1:5432/postgres", "", "postgres://tms:pw@db1:5432/postgres"},
		{"postgres://tms:pw@10.0.0.7/postgres", "", "postgres://tms:pw@10.0.0.7/postgres"},
		{"postgres://postgres@127.0.0.1:5432,db2:5432/postgres", "", "postgres://postgres@127.0.0.1:5432,db2:5432/postgres"},
		{"postgres://postgres@localhost.example.com/postgres", "", "postgres://postgres@localhost.example.com/postgres"},
		// The operator said what they want.
		{"postgres://postgres@127.0.0.1/postgres?sslmode=require", "", "postgres://postgres@127.0.0.1/postgres?sslmode=require"},
		{"postgres://postgres@127.0.0.1/postgres", "verify-full", "postgres://postgres@127.0.0.1/postgres"},
		// Unparseable: unchanged, for checkDatabaseURL to refuse.
		{"postgres://postgres@127.0.0.1:port/postgres", "", "postgres://postgres@127.0.0.1:port/postgres"},
	} {
		if got := withLocalSSLMode(c.in, c.pgsslmode); got != c.want {
			t.Errorf("withLocalSSLMode(%q, PGSSLMODE=%q) = %q, want %q", c.in, c.pgsslmode, got, c.want)
		}
	}
}
