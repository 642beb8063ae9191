-- Listing tickets (GET /tickets) pages through a tenant's tickets in
-- (created_at, id) order, bytewise by id so that every database orders
-- them alike whatever its collation: keyset pagination reads one index
-- range per page instead of sorting the table. Databases provisioned
-- before this file get it when a process first opens their pool
-- (tenants.Pools).
CREATE INDEX IF NOT EXISTS tickets_created_order ON tickets (created_at, id COLLATE "C");
