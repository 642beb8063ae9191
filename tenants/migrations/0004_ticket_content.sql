-- Ticket content (docs/api.md, "create_ticket"): an optional one-line
-- subject and a free-text description, NULL when the ticket has none.
-- ADD COLUMN with no default changes only the catalogue: no table
-- rewrite, instant however many tickets there are. The limits (200
-- characters, 10 KiB) are checked before any write (subjects.CheckContent);
-- the columns stay plain text so that a limit can change without a
-- migration. Databases provisioned before this file get the columns when
-- a process first opens their pool (tenants.Pools).
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS subject text;
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS description text;
