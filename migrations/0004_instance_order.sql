-- The instance view's order across partitions.
--
-- An instance's records normally share one partition (the key is the instance id), but keyless
-- records, or a topic whose partition count grew, spread one instance over several. Offsets do
-- not compare across partitions, so `fsm_instances` keeps the whole order key of the event it
-- shows: (sequence, persisted_at, partition, offset), an absent sequence ranking below every
-- present one (docs/DESIGN.md, "Order of an instance's records"). Expand-only: three nullable
-- columns, filled from the event each row already names.
ALTER TABLE fsm_instances
    ADD COLUMN IF NOT EXISTS last_event_sequence     BIGINT,
    ADD COLUMN IF NOT EXISTS last_event_persisted_at BIGINT,
    ADD COLUMN IF NOT EXISTS last_event_partition    INTEGER;

UPDATE fsm_instances i
SET last_event_sequence = e.sequence,
    last_event_persisted_at = e.persisted_at,
    last_event_partition = e.source_partition
FROM fsm_events e
WHERE e.id = i.last_event_id AND i.last_event_persisted_at IS NULL;
