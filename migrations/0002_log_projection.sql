-- What a log gives beyond Schema A, and the projector's own state. Expand-only: every
-- statement adds (IF NOT EXISTS) and nothing is dropped or renamed, so Schema A readers and
-- writers keep working (see migrations/README.md).

-- Events: the event's own timestamp (Schema A drops it), the unknown keys of the event object
-- (for example `_sourceComponent`), the public member after the transition, the producer's
-- per-instance sequence, and where the row came from in the log.
ALTER TABLE fsm_events
    ADD COLUMN IF NOT EXISTS sequence               BIGINT,
    ADD COLUMN IF NOT EXISTS event_timestamp        BIGINT,
    ADD COLUMN IF NOT EXISTS event_extra            JSONB,
    ADD COLUMN IF NOT EXISTS public_member_snapshot JSONB,
    ADD COLUMN IF NOT EXISTS source_topic           TEXT,
    ADD COLUMN IF NOT EXISTS source_partition       INTEGER,
    ADD COLUMN IF NOT EXISTS source_offset          BIGINT;

-- Keyset pagination over all events (`list_events`, time ranges).
CREATE INDEX IF NOT EXISTS idx_events_persisted_id ON fsm_events (persisted_at, id);

-- Snapshots: the instance fields Schema A loses (gap 8/9 of the spec), the producer's
-- sequence (decides "newer") and where the row came from.
ALTER TABLE fsm_snapshots
    ADD COLUMN IF NOT EXISTS sequence            BIGINT,
    ADD COLUMN IF NOT EXISTS internal_member     JSONB,
    ADD COLUMN IF NOT EXISTS is_entry_point      BOOLEAN,
    ADD COLUMN IF NOT EXISTS parent_instance_id  TEXT,
    ADD COLUMN IF NOT EXISTS parent_machine_name TEXT,
    ADD COLUMN IF NOT EXISTS instance_created_at BIGINT,
    ADD COLUMN IF NOT EXISTS instance_updated_at BIGINT,
    ADD COLUMN IF NOT EXISTS source_topic        TEXT,
    ADD COLUMN IF NOT EXISTS source_partition    INTEGER,
    ADD COLUMN IF NOT EXISTS source_offset       BIGINT;

-- Causality edges: the truth from which `fsm_events.caused` is derived. One row per
-- (parent, child) pair named in a child's `caused_by`; the parent row may not exist (yet).
CREATE TABLE IF NOT EXISTS fsm_causality (
    parent_id          TEXT   NOT NULL,
    child_id           TEXT   NOT NULL,
    child_persisted_at BIGINT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX IF NOT EXISTS idx_causality_child ON fsm_causality (child_id);

-- One row per event id that takes part in causality maintenance. A batch locks (FOR UPDATE,
-- in id order) the rows of every id it inserts and every parent it names before touching
-- events or edges, so a parent and its child written by two workers at once are serialized
-- and the second always sees the first (docs/DESIGN.md, "Causality").
CREATE TABLE IF NOT EXISTS fsm_causality_lock (
    event_id TEXT PRIMARY KEY
);

-- The projector's position: next offset to read per (projection, topic, partition),
-- written in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS xclog_offsets (
    projection  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    next_offset BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Instance view derived from events (so instance lists do not depend on snapshot frequency).
-- current_state / last_event_id follow log order; status comes from the newest snapshot
-- ('active' until a snapshot says otherwise).
CREATE TABLE IF NOT EXISTS fsm_instances (
    instance_id       TEXT   PRIMARY KEY,
    machine_name      TEXT   NOT NULL,
    component_name    TEXT   NOT NULL,
    current_state     TEXT   NOT NULL,
    status            TEXT   NOT NULL DEFAULT 'active',
    event_count       BIGINT NOT NULL DEFAULT 0,
    first_event_at    BIGINT,
    last_event_at     BIGINT,
    last_event_id     TEXT,
    last_event_offset BIGINT
);
CREATE INDEX IF NOT EXISTS idx_instances_machine_state ON fsm_instances (machine_name, current_state);
CREATE INDEX IF NOT EXISTS idx_instances_last_event ON fsm_instances (last_event_at);

-- Backfill from rows written before the log existed (Schema A history).
INSERT INTO fsm_causality (parent_id, child_id, child_persisted_at)
SELECT DISTINCT p.parent_id, e.id, e.persisted_at
FROM fsm_events e CROSS JOIN LATERAL unnest(e.caused_by) AS p(parent_id)
WHERE e.caused_by IS NOT NULL AND p.parent_id IS NOT NULL
ON CONFLICT DO NOTHING;

UPDATE fsm_events e
SET caused = c.children
FROM (
    SELECT parent_id, array_agg(child_id ORDER BY child_persisted_at, child_id) AS children
    FROM fsm_causality GROUP BY parent_id
) c
WHERE e.id = c.parent_id AND e.caused IS DISTINCT FROM c.children;

INSERT INTO fsm_instances (instance_id, machine_name, component_name, current_state, event_count,
                           first_event_at, last_event_at, last_event_id)
SELECT instance_id,
       (array_agg(machine_name ORDER BY persisted_at DESC, id DESC))[1],
       (array_agg(component_name ORDER BY persisted_at DESC, id DESC))[1],
       (array_agg(state_after ORDER BY persisted_at DESC, id DESC))[1],
       count(*), min(persisted_at), max(persisted_at),
       (array_agg(id ORDER BY persisted_at DESC, id DESC))[1]
FROM fsm_events GROUP BY instance_id
ON CONFLICT (instance_id) DO NOTHING;

UPDATE fsm_instances i SET status = s.status
FROM fsm_snapshots s WHERE s.instance_id = i.instance_id;
