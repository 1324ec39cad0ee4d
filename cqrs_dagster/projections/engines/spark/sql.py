"""Spark SQL of the Spark engine: the DuckDB engine's decode, clean-key folds and gold, in the
Spark Connect SQL subset (``from_json``, ``get_json_object``, variant types, ``max_by``), so the
same text runs on Sail, Apache Spark Connect and Databricks.

JSON types come from ``schema_of_variant(variant_get(try_parse_json(..), path))`` (``STRING``,
``BIGINT``, ``DECIMAL(..)``, ``OBJECT<..>``, ...), values from typed ``variant_get``, and the
``data`` / ``metadata`` text from ``get_json_object`` (the text as it stands in the body, which
for a canonical body is exactly orjson's). Only bodies the driver found canonical reach Spark.
"""

from __future__ import annotations

from cqrs_dagster.domain.events import (
    CURRENT_SCHEMA_VERSION,
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    EVENT_TYPES,
    ORDER_CREATED,
    ORDER_UPDATED,
)
from cqrs_dagster.domain.order import TRANSITIONS

_TYPES = ", ".join(f"'{t}'" for t in sorted(EVENT_TYPES))
_STATUSES = ", ".join(f"'{s}'" for s in sorted(TRANSITIONS))
_TS = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?Z$"
)
_MONEY = r"^[0-9]{1,16}(\\.[0-9]{1,2})?$"
_INTEGER_TYPES = "'BIGINT', 'INT', 'SMALLINT', 'TINYINT'"
# Numbers get_json_object does not give back verbatim on Apache Spark: it re-serializes the text
# it extracts (Jackson) and writes a JSON float the Java way ("1e-7" -> "1.0E-7"). A body with a
# float (or an integer beyond 64 bits) in data or metadata is left to the Python path. (A field
# NAMED like a type only loses the fast path.)
_NOT_VERBATIM = "DECIMAL|DOUBLE|FLOAT"


def _kind(doc: str, field: str) -> str:
    """The JSON type of ``doc``'s top-level ``field`` (NULL when absent)."""
    return f"schema_of_variant(variant_get({doc}, '$.{field}'))"


def _text(doc: str, field: str) -> str:
    """A JSON string field's value (NULL unless it is a string)."""
    return (
        f"(CASE WHEN {_kind(doc, field)} = 'STRING' "
        f"THEN variant_get({doc}, '$.{field}', 'string') END)"
    )


def _int(doc: str, field: str, digits: int) -> str:
    """A JSON integer field of 1 to ``digits`` digits, >= 1 (NULL otherwise)."""
    value = f"variant_get({doc}, '$.{field}', 'bigint')"
    return (
        f"(CASE WHEN {_kind(doc, field)} IN ({_INTEGER_TYPES}) "
        f"AND {value} BETWEEN 1 AND {10**digits - 1} THEN {value} END)"
    )


DECODE = f"""
WITH p AS (
    SELECT i, body, try_parse_json(body) AS v FROM msgs
), v AS (
    SELECT i, body, v,
        {_text("v", "eventId")} AS event_id,
        {_text("v", "eventType")} AS event_type,
        {_text("v", "aggregateId")} AS aggregate_id,
        {_text("v", "aggregateType")} AS aggregate_type,
        {_int("v", "version", 18)} AS version,
        {_int("v", "schemaVersion", 9)} AS schema_version,
        {_text("v", "timestamp")} AS ts,
        {_text("v", "correlationId")} AS correlation_id,
        {_text("v", "causationId")} AS causation_id,
        get_json_object(body, '$.data') AS data,
        get_json_object(body, '$.metadata') AS metadata,
        {_kind("v", "data")} AS data_kind,
        {_kind("v", "metadata")} AS metadata_kind
    FROM p
), t AS (
    SELECT *, CASE WHEN ts RLIKE '{_TS}' AND NOT startswith(ts, '0000')
        THEN try_to_timestamp(ts) END AS ts_value
    FROM v
), f AS (
    SELECT *, coalesce(
        body IS NOT NULL AND v IS NOT NULL
        AND event_id <> '' AND event_type IN ({_TYPES}) AND aggregate_id <> ''
        AND aggregate_type <> '' AND version >= 1
        AND schema_version = {CURRENT_SCHEMA_VERSION}
        AND ts_value IS NOT NULL
        AND correlation_id IS NOT NULL AND causation_id IS NOT NULL
        AND startswith(data_kind, 'OBJECT') AND startswith(data, '{{')
        AND startswith(metadata_kind, 'OBJECT') AND startswith(metadata, '{{')
        AND NOT data_kind RLIKE '{_NOT_VERBATIM}' AND NOT metadata_kind RLIKE '{_NOT_VERBATIM}',
        false) AS fast
    FROM t
)
SELECT i, fast,
    CASE WHEN fast THEN event_id END AS event_id,
    CASE WHEN fast THEN event_type END AS event_type,
    CASE WHEN fast THEN aggregate_id END AS aggregate_id,
    CASE WHEN fast THEN aggregate_type END AS aggregate_type,
    CASE WHEN fast THEN version END AS version,
    CASE WHEN fast THEN ts_value END AS event_timestamp,
    CASE WHEN fast THEN correlation_id END AS correlation_id,
    CASE WHEN fast THEN causation_id END AS causation_id,
    CASE WHEN fast THEN data END AS data,
    CASE WHEN fast THEN metadata END AS metadata,
    CASE WHEN fast THEN CAST(schema_version AS INT) END AS schema_version,
    CASE WHEN fast THEN to_date(ts_value) END AS event_date
FROM f
ORDER BY i
"""

ORDERS = f"""
WITH e AS (
    SELECT *, try_parse_json(data) AS d FROM ev
), f AS (
    SELECT *, CASE
        WHEN event_type = '{ORDER_UPDATED}' THEN
            coalesce({_text("d", "status")} IN ({_STATUSES}), false)
        WHEN event_type = '{ORDER_CREATED}' THEN coalesce(
            {_text("d", "customerId")} <> ''
            AND {_kind("d", "status")} = 'STRING'
            AND {_kind("d", "itemCount")} IN ({_INTEGER_TYPES})
            AND {_text("d", "totalAmount")} RLIKE '{_MONEY}'
            AND items_text IS NOT NULL, false)
        ELSE false END AS valid,
        {_text("d", "status")} AS status,
        {_text("d", "customerId")} AS customer_id,
        {_text("d", "totalAmount")} AS total_text,
        variant_get(d, '$.itemCount', 'bigint') AS item_count
    FROM e
), k AS (
    SELECT aggregate_id, count(*) AS n, count(DISTINCT version) AS nv, min(version) AS minv,
        min_by(event_type, version) AS first_type,
        count_if(event_type = '{ORDER_CREATED}') AS created,
        bool_and(valid) AS ok,
        max(version) AS version,
        max_by(status, version) AS status,
        max_by(event_timestamp, version) AS updated_date,
        max_by(event_id, version) AS last_event_id
    FROM f GROUP BY aggregate_id
), clean AS (
    SELECT k.*, c.order_id IS NOT NULL AS has_current FROM k LEFT JOIN cur c
        ON c.order_id = k.aggregate_id
    WHERE k.n = k.nv AND k.ok AND (
        (c.order_id IS NOT NULL AND k.created = 0 AND k.minv > c.version)
        OR (c.order_id IS NULL AND k.first_type = '{ORDER_CREATED}' AND k.created = 1))
)
SELECT
    clean.aggregate_id AS order_id,
    coalesce(c.customer_id, cr.customer_id) AS customer_id,
    clean.status AS status,
    coalesce(c.total_amount, CAST(cr.total_text AS DECIMAL(18, 2))) AS total_amount,
    coalesce(c.item_count, cr.item_count) AS item_count,
    coalesce(c.items, cr.items_text) AS items,
    coalesce(c.created_date, cr.event_timestamp) AS created_date,
    clean.updated_date AS updated_date,
    clean.version AS version,
    clean.last_event_id AS last_event_id,
    coalesce(c.created_day, to_date(cr.event_timestamp)) AS created_day,
    clean.n AS applied
FROM clean
LEFT JOIN cur c ON c.order_id = clean.aggregate_id
LEFT JOIN f cr ON NOT clean.has_current AND cr.aggregate_id = clean.aggregate_id
    AND cr.event_type = '{ORDER_CREATED}'
"""

CUSTOMERS = f"""
WITH e AS (
    SELECT *, try_parse_json(data) AS d,
        CASE WHEN startswith(data, '{{') THEN json_object_keys(data) END AS keys
    FROM ev
), f AS (
    SELECT *,
        {_text("d", "name")} AS name,
        {_text("d", "email")} AS email
    FROM e
), g AS (
    SELECT *, CASE
        WHEN event_type = '{CUSTOMER_REGISTERED}' THEN coalesce(name <> '' AND email <> '', false)
        WHEN event_type = '{CUSTOMER_UPDATED}' THEN coalesce(
            d IS NOT NULL AND keys IS NOT NULL
            AND (NOT array_contains(keys, 'name') OR name <> '')
            AND (NOT array_contains(keys, 'email') OR email <> ''), false)
        ELSE false END AS valid
    FROM f
), k AS (
    SELECT aggregate_id, count(*) AS n, count(DISTINCT version) AS nv, min(version) AS minv,
        min_by(event_type, version) AS first_type,
        count_if(event_type = '{CUSTOMER_REGISTERED}') AS registered,
        bool_and(valid) AS ok,
        max(version) AS version,
        max_by(name, version) FILTER (WHERE name IS NOT NULL) AS name,
        max_by(email, version) FILTER (WHERE email IS NOT NULL) AS email,
        min_by(event_timestamp, version) AS first_ts,
        max_by(event_timestamp, version) AS updated_date,
        max_by(event_id, version) AS last_event_id
    FROM g GROUP BY aggregate_id
)
SELECT
    k.aggregate_id AS customer_id,
    coalesce(k.name, c.name) AS name,
    coalesce(k.email, c.email) AS email,
    coalesce(c.created_date, k.first_ts) AS created_date,
    k.updated_date AS updated_date,
    k.version AS version,
    k.last_event_id AS last_event_id,
    k.n AS applied
FROM k LEFT JOIN cur c ON c.customer_id = k.aggregate_id
WHERE k.n = k.nv AND k.ok AND (
    (c.customer_id IS NOT NULL AND k.registered = 0 AND k.minv > c.version)
    OR (c.customer_id IS NULL AND k.first_type = '{CUSTOMER_REGISTERED}' AND k.registered = 1))
"""

ORDER_SUMMARY = """
SELECT o.order_id, o.customer_id, c.name AS customer_name, o.status, o.total_amount,
    o.item_count, o.created_date, o.updated_date
FROM o LEFT JOIN c ON c.customer_id = o.customer_id
ORDER BY o.order_id
"""

DAILY_METRICS = """
WITH g AS (
    SELECT created_day, count(order_id) AS order_count,
        CAST(sum(total_amount) AS DECIMAL(38, 2)) AS total_revenue,
        count(DISTINCT customer_id) AS unique_customers
    FROM o GROUP BY created_day
)
SELECT created_day AS order_date, order_count, total_revenue,
    round(total_revenue / order_count, 2) AS avg_order_value, unique_customers
FROM g
ORDER BY order_date
"""
