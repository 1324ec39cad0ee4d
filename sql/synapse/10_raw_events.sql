-- raw_events (bronze): every event once, with its envelope and bus position.
CREATE OR ALTER VIEW dbo.raw_events
AS
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
    [partition],
    sequence_number,
    [offset],
    enqueued_time,
    ingested_at,
    ingest_seq,
    event_date
FROM OPENROWSET(
    BULK 'raw_events/',
    DATA_SOURCE = 'cqrs_delta',
    FORMAT = 'DELTA'
)
WITH (
    event_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    event_type VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    aggregate_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    aggregate_type VARCHAR(64) COLLATE Latin1_General_100_BIN2_UTF8,
    version BIGINT,
    event_timestamp DATETIME2(6),
    correlation_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    causation_id VARCHAR(128) COLLATE Latin1_General_100_BIN2_UTF8,
    data VARCHAR(MAX) COLLATE Latin1_General_100_BIN2_UTF8,
    metadata VARCHAR(MAX) COLLATE Latin1_General_100_BIN2_UTF8,
    schema_version INT,
    [partition] INT,
    sequence_number BIGINT,
    [offset] VARCHAR(64) COLLATE Latin1_General_100_BIN2_UTF8,
    enqueued_time DATETIME2(6),
    ingested_at DATETIME2(6),
    ingest_seq BIGINT,
    event_date DATE
) AS r;
GO
