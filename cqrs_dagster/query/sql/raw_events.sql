-- raw_events (bronze): every event once, with its envelope and bus position.
-- Mirrors sql/synapse/10_raw_events.sql. _delta_raw_events is the Delta table registered by
-- cqrs_dagster.query.views (an empty table of the right schema until the table exists).
CREATE OR REPLACE VIEW raw_events AS
SELECT
    event_id,
    event_type,
    aggregate_id,
    aggregate_type,
    version,
    event_timestamp,
    correlation_id,
    causation_id,
    data,
    metadata,
    schema_version,
    "partition",
    sequence_number,
    CAST("offset" AS VARCHAR) AS "offset",  -- string; tables written before it was a string hold BIGINT
    enqueued_time,
    ingested_at,
    ingest_seq,
    event_date
FROM _delta_raw_events;
