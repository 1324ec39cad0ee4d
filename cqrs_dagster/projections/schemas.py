"""Read-model table names and Arrow schemas: the Delta table, the asset and the SQL view share a name.

Money is decimal(18,2); timestamps are UTC microseconds.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)

RAW_EVENTS = "raw_events"
ORDERS = "orders"
CUSTOMERS = "customers"
ORDER_SUMMARY = "order_summary"
DAILY_ORDER_METRICS = "daily_order_metrics"
DEAD_LETTER_EVENTS = "dead_letter_events"

READ_MODELS = (RAW_EVENTS, ORDERS, CUSTOMERS, ORDER_SUMMARY, DAILY_ORDER_METRICS)
ALL_TABLES = (*READ_MODELS, DEAD_LETTER_EVENTS)

# Bronze: every event once, with its envelope and bus position. Partitioned by event_date (the
# UTC date of the event's own timestamp, which a republished duplicate shares with its original,
# so deduplication only reads the dates present in a batch). ingest_seq is a gap-free,
# monotonically increasing position in this table: the silver tables' checkpoint.
RAW_EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("aggregate_id", pa.string()),
        ("aggregate_type", pa.string()),
        ("version", pa.int64()),
        ("event_timestamp", TS),
        ("correlation_id", pa.string()),
        ("causation_id", pa.string()),
        ("data", pa.string()),  # JSON
        ("metadata", pa.string()),  # JSON
        ("schema_version", pa.int32()),
        ("partition", pa.int32()),
        ("sequence_number", pa.int64()),
        ("offset", pa.string()),  # opaque Event Hubs offset (string on geo-replicated namespaces)
        ("enqueued_time", TS),
        ("ingested_at", TS),
        ("ingest_seq", pa.int64()),
        ("event_date", pa.date32()),
    ]
)

# Silver: one row per order. Partitioned by created_day so an incremental MERGE of recent orders
# touches few files (time-ordered UUIDv7 ids keep new orders together).
ORDERS_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("status", pa.string()),
        ("total_amount", MONEY),
        ("item_count", pa.int64()),
        ("items", pa.string()),  # JSON [{sku, quantity, unitPrice}]
        ("created_date", TS),
        ("updated_date", TS),
        ("version", pa.int64()),
        ("last_event_id", pa.string()),
        ("created_day", pa.date32()),
    ]
)

CUSTOMERS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("name", pa.string()),
        ("email", pa.string()),
        ("created_date", TS),
        ("updated_date", TS),
        ("version", pa.int64()),
        ("last_event_id", pa.string()),
    ]
)

# Gold: the reference's vw_order_summary.
ORDER_SUMMARY_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("customer_name", pa.string()),
        ("status", pa.string()),
        ("total_amount", MONEY),
        ("item_count", pa.int64()),
        ("created_date", TS),
        ("updated_date", TS),
    ]
)
# What order_summary takes from orders (not items, the largest column, nor version / ids).
ORDER_SUMMARY_SOURCE_COLUMNS = [c for c in ORDER_SUMMARY_SCHEMA.names if c != "customer_name"]

# Gold: the reference's vw_daily_order_metrics, over every order created that UTC day.
DAILY_ORDER_METRICS_SCHEMA = pa.schema(
    [
        ("order_date", pa.date32()),
        ("order_count", pa.int64()),
        ("total_revenue", MONEY),
        ("avg_order_value", MONEY),
        ("unique_customers", pa.int64()),
    ]
)

DEAD_LETTER_EVENTS_SCHEMA = pa.schema(
    [
        ("dead_letter_id", pa.string()),  # "<stage>:<partition>:<sequence_number>"
        ("stage", pa.string()),  # raw_events | orders | customers
        ("partition", pa.int32()),
        ("sequence_number", pa.int64()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("body", pa.string()),
        ("reason", pa.string()),
        ("run_id", pa.string()),
        ("dead_lettered_at", TS),
        ("resolved", pa.bool_()),
        ("resolved_at", TS),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    RAW_EVENTS: RAW_EVENTS_SCHEMA,
    ORDERS: ORDERS_SCHEMA,
    CUSTOMERS: CUSTOMERS_SCHEMA,
    ORDER_SUMMARY: ORDER_SUMMARY_SCHEMA,
    DAILY_ORDER_METRICS: DAILY_ORDER_METRICS_SCHEMA,
    DEAD_LETTER_EVENTS: DEAD_LETTER_EVENTS_SCHEMA,
}
