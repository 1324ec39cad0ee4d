"""Vectorized silver folds (DuckDB over Arrow) for the keys whose batch is *clean*.

The Python fold (:mod:`.folding`) costs ~10 µs per event; a catch-up of a million events cannot
afford it. Almost every key in a batch is clean: either it has no current row and its events are
one OrderCreated (CustomerRegistered) followed by updates, or it has a current row and its events
are only updates newer than that row; no two events share a version and every event's data is
valid. For such a key the sequential fold applies every event in version order, so its final row
is computable column-wise: creation fields from the creating event (or the current row), the rest
from the highest version. Every other key (duplicates, stale or out-of-order versions, invalid
data, anything the fold would reject or skip) goes to the Python fold unchanged, so results are
identical by construction (a property test compares both on arbitrary streams).

``items`` (orders) is the text orjson writes for ``data["items"]`` on every path, so a row's text
never depends on which path, hence which batch split, produced it. Here DuckDB takes it from the
one parse of ``data`` the fold makes anyway (the Spark engine calls :func:`_items_text`, orjson
in Python): DuckDB writes a value back exactly as orjson does except for floats (``1e16``),
control-character escapes with a hex letter, NaN / Infinity and repeated keys. An OrderCreated
whose items text holds a float or such an escape (:data:`_ODD_ITEMS`), or whose items are not
the domain's shape (:data:`_FLAT_ITEMS`: objects with sku, quantity and unitPrice, nothing
nested, no key repeated), makes its key not clean: the Python fold writes that row with orjson.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cqrs_dagster.domain.events import (
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    ORDER_CREATED,
    ORDER_UPDATED,
)
from cqrs_dagster.domain.order import TRANSITIONS

from ...engine import FoldOutput
from ...schemas import CUSTOMERS_SCHEMA, ORDERS_SCHEMA
from .connection import duck

EVENT_COLUMNS = ["event_id", "event_type", "aggregate_id", "version", "event_timestamp", "data"]
_MONEY = r"^[0-9]{1,16}(\.[0-9]{1,2})?$"
_STATUSES = ", ".join(f"'{s}'" for s in sorted(TRANSITIONS))


def _items_text(events: pa.Table) -> pa.Array:
    """``orjson.dumps(data["items"])`` of each OrderCreated (None elsewhere and where data is
    not usable); only the OrderCreated rows' data reach Python."""
    created = pc.indices_nonzero(pc.equal(events.column("event_type"), ORDER_CREATED))
    out: list[str | None] = [None] * events.num_rows
    datas = events.column("data").take(created).to_pylist()
    for index, data in zip(created.to_pylist(), datas, strict=True):
        try:
            items = orjson.loads(data)["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if isinstance(items, list):
            out[index] = orjson.dumps(items).decode()
    return pa.array(out, pa.string())


# Items text DuckDB may write differently from orjson: any number with a fraction or an
# exponent (DuckDB writes 1e16 as 10000000000000000.0), NaN / Infinity, a control-character
# escape with a hex letter. A string merely containing such text only costs the Python fold.
_ODD_ITEMS = r"'[\[:,]-?([0-9]+[.eE]|(?i:nan|inf))|\\u00[01][a-fA-F]'"

# Items as the domain writes them: a list of objects with sku, quantity and unitPrice, no other
# '{' than the items' own (no object nested in a value, no '{' in a string: conservative). The
# strict transform fails (NULL) on a missing field, and on a repeated key (DuckDB would write
# it back twice, orjson once: raw_events rows written before repeated keys were sent to the
# Python path may hold one); such items are left to the Python fold.
_FLAT_ITEMS = """try(json_transform_strict(j.items,
    '[{"sku": "JSON", "quantity": "JSON", "unitPrice": "JSON"}]')) IS NOT NULL
    AND strlen(CAST(j.items AS VARCHAR)) - strlen(replace(CAST(j.items AS VARCHAR), '{', ''))
        = json_array_length(j.items)"""

_ORDERS_SQL = f"""
WITH d AS (
    SELECT *, try(json_transform(data, '{{"customerId": "JSON", "totalAmount": "JSON",
        "itemCount": "JSON", "status": "JSON", "items": "JSON"}}')) AS j
    FROM ev
), e AS (
    SELECT *, CASE WHEN event_type = '{ORDER_CREATED}' AND json_type(j.items) = 'ARRAY'
            AND NOT regexp_matches(CAST(j.items AS VARCHAR), {_ODD_ITEMS})
            AND {_FLAT_ITEMS}
        THEN CAST(j.items AS VARCHAR) END AS items_text
    FROM d
), f AS (
    SELECT *, CASE
        WHEN event_type = '{ORDER_UPDATED}' THEN
            json_type(j.status) = 'VARCHAR' AND (j.status ->> '$') IN ({_STATUSES})
        WHEN event_type = '{ORDER_CREATED}' THEN
            json_type(j.customerId) = 'VARCHAR' AND (j.customerId ->> '$') <> ''
            AND json_type(j.status) = 'VARCHAR'
            AND json_type(j.itemCount) IN ('BIGINT', 'UBIGINT')
            AND try_cast(j.itemCount AS BIGINT) IS NOT NULL
            AND json_type(j.totalAmount) = 'VARCHAR'
            AND regexp_full_match(j.totalAmount ->> '$', '{_MONEY}')
            AND items_text IS NOT NULL
        ELSE false END AS valid
    FROM e
), k AS (
    SELECT aggregate_id, count(*) AS n, count(DISTINCT version) AS nv, min(version) AS minv,
        arg_min(event_type, version) AS first_type,
        count(*) FILTER (WHERE event_type = '{ORDER_CREATED}') AS created,
        bool_and(coalesce(valid, false)) AS ok,
        max(version) AS version,
        arg_max(j.status ->> '$', version) AS status,
        arg_max(event_timestamp, version) AS updated_date,
        arg_max(event_id, version) AS last_event_id
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
    coalesce(c.customer_id, cr.j.customerId ->> '$') AS customer_id,
    clean.status AS status,
    coalesce(c.total_amount, CAST(cr.j.totalAmount ->> '$' AS DECIMAL(18, 2))) AS total_amount,
    coalesce(c.item_count, CAST(cr.j.itemCount AS BIGINT)) AS item_count,
    coalesce(c.items, cr.items_text) AS items,
    coalesce(c.created_date, cr.event_timestamp) AS created_date,
    clean.updated_date AS updated_date,
    clean.version AS version,
    clean.last_event_id AS last_event_id,
    coalesce(c.created_day, CAST(cr.event_timestamp AS DATE)) AS created_day,
    clean.n AS applied
FROM clean
LEFT JOIN cur c ON c.order_id = clean.aggregate_id
LEFT JOIN f cr ON NOT clean.has_current AND cr.aggregate_id = clean.aggregate_id
    AND cr.event_type = '{ORDER_CREATED}'
"""

_CUSTOMERS_SQL = f"""
WITH e AS (
    SELECT *, try(json_transform(data, '{{"name": "JSON", "email": "JSON"}}')) AS j,
        try(json_keys(data)) AS keys
    FROM ev
), f AS (
    SELECT *,
        json_type(j.name) = 'VARCHAR' AND (j.name ->> '$') <> '' AS name_ok,
        json_type(j.email) = 'VARCHAR' AND (j.email ->> '$') <> '' AS email_ok,
        CASE WHEN json_type(j.name) = 'VARCHAR' THEN j.name ->> '$' END AS name,
        CASE WHEN json_type(j.email) = 'VARCHAR' THEN j.email ->> '$' END AS email
    FROM e
), g AS (
    SELECT *, CASE
        WHEN event_type = '{CUSTOMER_REGISTERED}' THEN coalesce(name_ok AND email_ok, false)
        WHEN event_type = '{CUSTOMER_UPDATED}' THEN
            (NOT list_contains(keys, 'name') OR coalesce(name_ok, false))
            AND (NOT list_contains(keys, 'email') OR coalesce(email_ok, false))
        ELSE false END AS valid
    FROM f
), k AS (
    SELECT aggregate_id, count(*) AS n, count(DISTINCT version) AS nv, min(version) AS minv,
        arg_min(event_type, version) AS first_type,
        count(*) FILTER (WHERE event_type = '{CUSTOMER_REGISTERED}') AS registered,
        bool_and(coalesce(valid, false)) AS ok,
        max(version) AS version,
        arg_max(name, version) FILTER (WHERE name IS NOT NULL) AS name,
        arg_max(email, version) FILTER (WHERE email IS NOT NULL) AS email,
        arg_min(event_timestamp, version) AS first_ts,
        arg_max(event_timestamp, version) AS updated_date,
        arg_max(event_id, version) AS last_event_id
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


def _run(sql: str, events: pa.Table, current: pa.Table, schema: pa.Schema) -> pa.Table:
    con = duck()
    try:
        con.register("ev", events)
        con.register("cur", current)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _split(out: pa.Table, events: pa.Table, schema: pa.Schema, key: str) -> FoldOutput:
    applied = int(pc.sum(out.column("applied")).as_py() or 0) if out.num_rows else 0
    rows = out.select(schema.names).cast(schema)
    keys = pc.unique(events.column("aggregate_id"))
    others = pc.filter(keys, pc.invert(pc.is_in(keys, rows.column(key))))
    return FoldOutput(rows, applied, others)


def fast_fold_orders(events: pa.Table, current: pa.Table) -> FoldOutput:
    """Rows of the clean order keys, how many events they applied, and the other keys."""
    if events.num_rows == 0:
        return FoldOutput(ORDERS_SCHEMA.empty_table(), 0, pa.array([], pa.string()))
    out = _run(_ORDERS_SQL, events.select(EVENT_COLUMNS), current.cast(ORDERS_SCHEMA),
               ORDERS_SCHEMA)  # fmt: skip
    return _split(out, events, ORDERS_SCHEMA, "order_id")


def fast_fold_customers(events: pa.Table, current: pa.Table) -> FoldOutput:
    """Rows of the clean customer keys, how many events they applied, and the other keys."""
    if events.num_rows == 0:
        return FoldOutput(CUSTOMERS_SCHEMA.empty_table(), 0, pa.array([], pa.string()))
    out = _run(_CUSTOMERS_SQL, events.select(EVENT_COLUMNS), current.cast(CUSTOMERS_SCHEMA),
               CUSTOMERS_SCHEMA)  # fmt: skip
    return _split(out, events, CUSTOMERS_SCHEMA, "customer_id")
