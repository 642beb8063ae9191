// Package tenants is the tenant context: the registry of client companies,
// their login sessions, their own Postgres databases (provisioning,
// migrations, bounded connection pools) and their service agents.
//
// # Registry: CQRS over JetStream KV
//
// The command side is the KV bucket subjects.BucketTenants. Creating an
// account claims the e-mail (subjects.EmailKey, case-insensitive) and a
// sub_domain (subjects.SubDomainKey: the slug of the name, then -2, -3 ...)
// with only-if-absent creates, so two processes can never hand out the
// same one. The claims carry a ten-minute per-key TTL until the tenant
// record is written, then a plain Update makes them permanent: a process
// that dies half way blocks an address for minutes, not forever. Every
// failure undoes what was done (claims purged, database dropped).
//
// The query side is an in-memory map in every process, fed by a watch on
// the tenant records: a fresh map is built from the watch's snapshot and
// swapped in at its end marker, then live updates are applied. A watch
// that breaks (nats.go issue 1777) or a reconnect starts over with a new
// snapshot. The writing process puts its new tenant into its map at once
// (read-your-writes); any process falls back to a KV Get on a miss.
//
// Sessions work the same way in subjects.BucketSessions: the key is the
// SHA-256 of the token, the value names the tenant and the expiry, and the
// key's TTL collects it. A revocation purges the key; every process's watch
// drops it within milliseconds.
//
// # Placement
//
// Each configured server is known by host:port, which the tenant record
// keeps as DBServer; its database is DBPrefix + client_id. A new tenant
// goes to the reachable server that holds the fewest databases with our
// prefix (counted in pg_database), the first listed on a tie; unreachable
// servers are skipped. Two concurrent creations may pick the same server;
// the rule only needs to balance, not to be exact. Servers can be added to
// the list at any time; a server must stay in the list while it holds
// tenants, since a tenant's placement never moves.
//
// A tenant database is closed to PUBLIC (REVOKE CONNECT, TEMPORARY) before
// the versioned migrations of migrations/ run, each file in its own
// transaction recorded in schema_migrations. A database provisioned by an
// older version gets the files it lacks when a process first uses it
// (Pools.Do), under the same per-database advisory lock.
//
// # Pools
//
// Pools gives each tenant a small pgx pool, made on the tenant's first
// query and closed after IdleTimeout unused. The number of sockets open to
// one server is a hard bound (MaxConnsPerServer), enforced below pgx: a
// pool's dial takes a token of its server and the socket gives it back when
// it is closed and the server has ended the backend. When no token is
// free, the dialer closes the least recently used pool of that server that
// no query is using, else one idle connection of a busy pool, and waits.
// A pool is never closed under a running Do (reference count). So a
// thousand tenants share, say, twenty connections: busy tenants keep their
// pools, the rest pay a reconnect. Provisioning uses its own short-lived
// maintenance connection, outside the bound.
package tenants
