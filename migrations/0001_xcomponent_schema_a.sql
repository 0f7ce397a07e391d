-- The xcomponent-ai "Schema A" tables (PERSISTENCE.md, examples/persistence/postgresql.ts),
-- with the same table names, column names and column types, except that every VARCHAR(n)
-- is TEXT (wider, never narrower).
--
-- Written to apply both to an empty database and to one that already holds these tables
-- with rows (people moving from direct writes to the log keep their history): every
-- statement is IF NOT EXISTS, and existing VARCHAR(n) columns are widened in place.

CREATE TABLE IF NOT EXISTS fsm_events (
    id                    TEXT PRIMARY KEY,
    instance_id           TEXT NOT NULL,
    machine_name          TEXT NOT NULL,
    component_name        TEXT NOT NULL,
    event_type            TEXT NOT NULL,
    event_payload         JSONB NOT NULL,
    state_before          TEXT NOT NULL,
    state_after           TEXT NOT NULL,
    persisted_at          BIGINT NOT NULL,
    caused_by             TEXT[],
    caused                TEXT[],
    source_component_name TEXT,
    target_component_name TEXT,
    created_at            TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- Widen a pre-existing Schema A table (VARCHAR(50)/VARCHAR(100)) to TEXT. VARCHAR -> TEXT
-- is binary coercible; on a table that is already TEXT these are no-ops.
ALTER TABLE fsm_events
    ALTER COLUMN id TYPE TEXT,
    ALTER COLUMN instance_id TYPE TEXT,
    ALTER COLUMN machine_name TYPE TEXT,
    ALTER COLUMN component_name TYPE TEXT,
    ALTER COLUMN event_type TYPE TEXT,
    ALTER COLUMN state_before TYPE TEXT,
    ALTER COLUMN state_after TYPE TEXT,
    ALTER COLUMN caused_by TYPE TEXT[],
    ALTER COLUMN caused TYPE TEXT[],
    ALTER COLUMN source_component_name TYPE TEXT,
    ALTER COLUMN target_component_name TYPE TEXT;

CREATE INDEX IF NOT EXISTS idx_events_instance ON fsm_events (instance_id);
CREATE INDEX IF NOT EXISTS idx_events_component ON fsm_events (component_name);
CREATE INDEX IF NOT EXISTS idx_events_machine ON fsm_events (machine_name);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON fsm_events (persisted_at);
CREATE INDEX IF NOT EXISTS idx_events_caused_by ON fsm_events USING GIN (caused_by);

CREATE TABLE IF NOT EXISTS fsm_snapshots (
    instance_id      TEXT PRIMARY KEY,
    machine_name     TEXT NOT NULL,
    current_state    TEXT NOT NULL,
    status           TEXT NOT NULL,
    context          JSONB NOT NULL,
    public_member    JSONB,
    snapshot_at      BIGINT NOT NULL,
    last_event_id    TEXT NOT NULL,
    pending_timeouts JSONB,
    created_at       TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at       TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

ALTER TABLE fsm_snapshots
    ALTER COLUMN instance_id TYPE TEXT,
    ALTER COLUMN machine_name TYPE TEXT,
    ALTER COLUMN current_state TYPE TEXT,
    ALTER COLUMN status TYPE TEXT,
    ALTER COLUMN last_event_id TYPE TEXT;
