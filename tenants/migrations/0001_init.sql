-- The seed's per-tenant schema (docs/design.md, "The seed"), with text ids: ids are generated
-- by the service (agent ids "a...", ticket ids from the ingress), so a
-- ticket keeps its id from admission to the database and a redelivered
-- ticket hits the primary key instead of creating a second row.

CREATE TYPE sa_status AS ENUM ('available', 'unavailable');
CREATE TYPE slot_availability AS ENUM ('available', 'unavailable');

CREATE TABLE service_agents (
    id              text PRIMARY KEY,
    name            varchar(100) NOT NULL,
    status          sa_status NOT NULL DEFAULT 'available',
    -- Set while status is available: the agent offers slots from the
    -- first whole minute at or after it.
    available_since timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'available') = (available_since IS NOT NULL))
);

CREATE INDEX service_agents_created_at ON service_agents (created_at, id);

CREATE TABLE slots (
    id        text PRIMARY KEY,
    sa_id     text NOT NULL REFERENCES service_agents (id),
    time      timestamptz NOT NULL,
    available slot_availability NOT NULL DEFAULT 'available',
    UNIQUE (sa_id, time)
);

CREATE TABLE tickets (
    id           text PRIMARY KEY,
    type         varchar(20) NOT NULL CHECK (type IN ('GOLD', 'SILVER', 'BRONZE')),
    status       text NOT NULL CHECK (status IN ('accepted', 'allocated', 'cancelled')),
    created_at   timestamptz NOT NULL,
    deadline     timestamptz NOT NULL,
    start_time   timestamptz,
    end_time     timestamptz,
    sa_id        text REFERENCES service_agents (id),
    slot_id      text REFERENCES slots (id),
    cancelled_at timestamptz
);

-- The last guard against double booking (docs/design.md): one live ticket per
-- agent-minute; a cancelled ticket frees its minute.
CREATE UNIQUE INDEX tickets_agent_minute ON tickets (sa_id, start_time) WHERE status <> 'cancelled';
