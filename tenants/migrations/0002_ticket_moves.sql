-- Feasibility admission moves accepted tickets to other agent-minutes
-- inside their windows (docs/design.md, "The allocator"): a ticket's row
-- follows the slot record with the most moves, so a record delivered late
-- never moves a row back. Databases provisioned before this file get it
-- when a process first opens their pool (tenants.Pools).
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS moves integer NOT NULL DEFAULT 0;
