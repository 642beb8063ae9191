// Package tenants is the tenant context: the registry of client companies,
// their login sessions, their own Postgres databases (provisioning,
// migrations, bounded connection pools) and their service agents.
package tenants
