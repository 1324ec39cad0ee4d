"""Quality rules: event-stream integrity of raw_events and consistency of the read models.

Each rule scans what it needs with DuckDB (columnar, projected reads) and returns the first few
offending ids so the check's metadata points at the problem.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cqrs_dagster.domain.events import (
    CUSTOMER,
    CUSTOMER_REGISTERED,
    CUSTOMER_UPDATED,
    ORDER,
    ORDER_CREATED,
    ORDER_UPDATED,
)
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import isin, scan
from cqrs_dagster.projections.tables import TableStore

from .engine import connect
from .outcome import FIRST_FEW, CheckOutcome
from .scope import RunScope, raw_rows, raw_rows_on_dates

AGGREGATE_OF = {
    CUSTOMER_REGISTERED: CUSTOMER,
    CUSTOMER_UPDATED: CUSTOMER,
    ORDER_CREATED: ORDER,
    ORDER_UPDATED: ORDER,
}
ENVELOPE_COLUMNS = (
    "event_id",
    "aggregate_id",
    "event_type",
    "aggregate_type",
    "version",
    "schema_version",
    "event_timestamp",
    "data",
)
ITEMS_JSON = '[{"sku": "VARCHAR", "quantity": "BIGINT", "unitPrice": "DECIMAL(18,2)"}]'


def _ids(rows: list[tuple[Any, ...]]) -> list[str]:
    return [str(r[0]) for r in rows[:FIRST_FEW]]


def _offending_rows(
    found: list[tuple[Any, ...]],
    count_figure: str,
    failing: str,
    passing: str,
    /,
    **figures: int | float | str,
) -> CheckOutcome:
    """Passed when no row offends; ``failing`` is formatted with ``n``, the offending count."""
    return CheckOutcome(
        passed=not found,
        summary=failing.format(n=len(found)) if found else passing,
        figures={count_figure: len(found), **figures},
        offending=_ids(found),
    )


def unique_event_ids(tables: TableStore, scope: RunScope | None = None) -> CheckOutcome:
    """No eventId appears twice in raw_events.

    With a run's ``scope``: no eventId the run appended appears twice among the rows of its
    event dates (a duplicate always shares its original's event_date) in the files whose
    event_id range overlaps the run's (any row with one of its ids is in such a file), so the
    cost follows the batch, not the table nor the day.
    """
    if scope is None:
        con = connect(tables, (schemas.RAW_EVENTS,))
        source = "raw_events"
    else:
        new = raw_rows(tables, scope, ["event_id", "event_date"])
        dates = pc.unique(new.column("event_date")).to_pylist()
        ids = new.column("event_id")
        span = (pc.min(ids).as_py(), pc.max(ids).as_py()) if new.num_rows else None
        same = raw_rows_on_dates(tables, dates, ["event_id"], span)
        con = connect(tables, (), {"new_rows": new, "same_dates": same})
        source = "same_dates WHERE event_id IN (SELECT event_id FROM new_rows)"
    rows = con.execute(
        f"SELECT event_id, count(*) AS n FROM {source} GROUP BY event_id HAVING n > 1 "
        "ORDER BY event_id LIMIT 1000"
    ).fetchall()
    checked = con.execute(
        "SELECT count(*) FROM " + ("raw_events" if scope is None else "new_rows")
    ).fetchone()
    read = {} if scope is None else {"same_day_rows_read": same.num_rows}
    return _offending_rows(
        rows,
        "duplicate_event_ids",
        "{n} duplicated eventId(s)",
        "every eventId is unique",
        events_checked=int(checked[0]) if checked else 0,
        scope="whole table" if scope is None else "this run's rows",
        **read,
    )


def version_sequences(tables: TableStore) -> CheckOutcome:
    """Per aggregate, versions run 1, 2, 3 ... with no gap and no repeat."""
    con = connect(tables, (schemas.RAW_EVENTS,))
    rows = con.execute(
        """
        SELECT aggregate_id, count(*) AS n, count(DISTINCT version) AS d, min(version) AS lo,
               max(version) AS hi
        FROM raw_events GROUP BY aggregate_id
        HAVING n <> d OR lo <> 1 OR hi <> d
        ORDER BY aggregate_id LIMIT 1000
        """
    ).fetchall()
    return _offending_rows(
        rows,
        "broken_aggregates",
        "{n} aggregate(s) with a gap or repeat in their versions",
        "every aggregate's versions run 1..n",
    )


def envelope_schema(tables: TableStore, scope: RunScope | None = None) -> CheckOutcome:
    """Every envelope is well formed: ids present, known type on the right aggregate, JSON data.

    With a run's ``scope`` only the rows that run appended are read.
    """
    if scope is None:
        con = connect(tables, (schemas.RAW_EVENTS,))
    else:
        con = connect(tables, (), {"raw_events": raw_rows(tables, scope, list(ENVELOPE_COLUMNS))})
    known = ", ".join(f"('{t}', '{a}')" for t, a in AGGREGATE_OF.items())
    rows = con.execute(
        f"""
        WITH known(event_type, aggregate_type) AS (VALUES {known})
        SELECT r.event_id FROM raw_events r
        LEFT JOIN known k ON k.event_type = r.event_type AND k.aggregate_type = r.aggregate_type
        WHERE r.event_id IS NULL OR r.event_id = '' OR r.aggregate_id IS NULL OR r.aggregate_id = ''
           OR k.event_type IS NULL OR r.version IS NULL OR r.version < 1
           OR r.schema_version IS NULL OR r.schema_version < 1 OR r.event_timestamp IS NULL
           OR NOT json_valid(r.data) OR json_type(r.data) <> 'OBJECT'
        ORDER BY 1 LIMIT 1000
        """
    ).fetchall()
    return _offending_rows(
        rows, "malformed_envelopes", "{n} malformed envelope(s)", "every envelope is well formed"
    )


# The aggregate type whose events write each silver table.
SILVER_AGGREGATE = {schemas.ORDERS: ORDER, schemas.CUSTOMERS: CUSTOMER}


# The last few touched_rows answers: a pass's rules on one table (unique keys, amounts) ask for
# the same rows. Keyed by the table's URI and version, so an answer is never stale; only small
# ones (a live pass's), so a catch-up's batch is not held after its checks (peak RSS, issue 7 f).
_TOUCHED: OrderedDict[tuple[str, int, str, int, int], pa.Table] = OrderedDict()
_TOUCHED_KEEP = 2
_TOUCHED_ROWS_AT_MOST = 10_000
_touched_lock = threading.Lock()


def touched_rows(tables: TableStore, table: str, key: str, scope: RunScope) -> pa.Table:
    """The rows of silver ``table`` whose key an event of ``scope`` (raw ingest_seq range) wrote:
    what a projection pass over that range can have changed (files pruned on the keys' range)."""
    target = tables.open(table)
    if target is None:
        return schemas.SCHEMAS[table].empty_table()
    memo = (target.table_uri, target.version(), key, scope.after_seq, scope.upto_seq)
    with _touched_lock:
        held = _TOUCHED.get(memo)
    if held is not None:
        return held
    aggregate = SILVER_AGGREGATE[table]
    raw = raw_rows(tables, scope, ["event_type", "aggregate_id"])
    types = [t for t, a in AGGREGATE_OF.items() if a == aggregate]
    keys = pc.unique(raw.filter(isin("event_type", types))["aggregate_id"]).to_pylist()
    if not keys:
        return schemas.SCHEMAS[table].empty_table()
    rows = scan(target, [(key, ">=", min(keys)), (key, "<=", max(keys))], isin(key, keys))
    if rows.num_rows > _TOUCHED_ROWS_AT_MOST:
        return rows
    with _touched_lock:
        _TOUCHED[memo] = rows
        while len(_TOUCHED) > _TOUCHED_KEEP:
            _TOUCHED.popitem(last=False)
    return rows


def _silver(tables: TableStore, table: str, key: str, scope: RunScope | None) -> Any:
    """DuckDB over ``table``: the whole table, or (with ``scope``) only the keys it touched."""
    if scope is None:
        return connect(tables, (table,))
    return connect(tables, (), {table: touched_rows(tables, table, key, scope)})


def unique_keys(
    tables: TableStore, table: str, key: str, scope: RunScope | None = None
) -> CheckOutcome:
    """The table's key column holds no duplicates and no nulls (with ``scope``: among the keys
    the scope's events wrote, the only rows a pass over it can have changed)."""
    con = _silver(tables, table, key, scope)
    rows = con.execute(
        f"SELECT {key}, count(*) AS n FROM {table} GROUP BY {key} HAVING n > 1 OR {key} IS NULL "
        f"ORDER BY 1 LIMIT 1000"
    ).fetchall()
    count = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return _offending_rows(
        rows,
        "duplicate_keys",
        "{n} duplicated " + key + "(s)",
        f"{key} is unique",
        rows=int(count[0]) if count else 0,
    )


def order_amounts(tables: TableStore, scope: RunScope | None = None) -> CheckOutcome:
    """total_amount >= 0 and equal to the exact sum of quantity x unitPrice of the items (with
    ``scope``: for the orders the scope's events wrote)."""
    con = _silver(tables, schemas.ORDERS, "order_id", scope)
    rows = con.execute(
        f"""
        WITH lines AS (
            SELECT order_id, total_amount, item_count,
                   unnest(from_json(items, '{ITEMS_JSON}')) AS item
            FROM orders
        ), sums AS (
            SELECT order_id, any_value(total_amount) AS total_amount,
                   any_value(item_count) AS item_count,
                   sum(item.quantity * item.unitPrice) AS computed,
                   sum(item.quantity) AS computed_count
            FROM lines GROUP BY order_id
        )
        SELECT o.order_id FROM orders o LEFT JOIN sums s USING (order_id)
        WHERE o.total_amount < 0
           OR (s.order_id IS NOT NULL AND (s.computed <> o.total_amount
                                           OR s.computed_count <> o.item_count))
        ORDER BY 1 LIMIT 1000
        """
    ).fetchall()
    return _offending_rows(
        rows,
        "bad_totals",
        "{n} order(s) whose total is negative or differs from its items",
        "every total_amount is >= 0 and equals its items' sum",
    )


def orders_reconcile(tables: TableStore, checkpoint: int) -> CheckOutcome:
    """Rows in orders = distinct OrderCreated aggregates in raw_events up to orders' checkpoint."""
    con = connect(tables, (schemas.RAW_EVENTS, schemas.ORDERS))
    missing = con.execute(
        """
        SELECT DISTINCT r.aggregate_id FROM raw_events r
        WHERE r.event_type = 'OrderCreated' AND r.ingest_seq <= $cp
          AND r.aggregate_id NOT IN (SELECT order_id FROM orders)
        ORDER BY 1 LIMIT 1000
        """,
        {"cp": checkpoint},
    ).fetchall()
    extra = con.execute(
        """
        SELECT o.order_id FROM orders o WHERE o.order_id NOT IN (
            SELECT aggregate_id FROM raw_events
            WHERE event_type = 'OrderCreated' AND ingest_seq <= $cp)
        ORDER BY 1 LIMIT 1000
        """,
        {"cp": checkpoint},
    ).fetchall()
    created = con.execute(
        "SELECT count(DISTINCT aggregate_id) FROM raw_events "
        "WHERE event_type = 'OrderCreated' AND ingest_seq <= $cp",
        {"cp": checkpoint},
    ).fetchone()
    rows = con.execute("SELECT count(*) FROM orders").fetchone()
    ok = not missing and not extra
    return CheckOutcome(
        passed=ok,
        summary=(
            "orders matches raw_events at its checkpoint"
            if ok
            else f"{len(missing)} order(s) missing, {len(extra)} unexpected"
        ),
        figures={
            "orders_rows": int(rows[0]) if rows else 0,
            "order_created_aggregates": int(created[0]) if created else 0,
            "missing": len(missing),
            "unexpected": len(extra),
            "checkpoint": checkpoint,
        },
        offending=_ids(missing) + _ids(extra),
    )


def daily_metrics_match(tables: TableStore) -> CheckOutcome:
    """daily_order_metrics equals a recomputation from orders."""
    con = connect(tables, (schemas.ORDERS, schemas.DAILY_ORDER_METRICS))
    rows = con.execute(
        """
        WITH expected AS (
            SELECT CAST(created_date AT TIME ZONE 'UTC' AS DATE) AS order_date,
                   count(*) AS order_count,
                   CAST(sum(total_amount) AS DECIMAL(18,2)) AS total_revenue,
                   count(DISTINCT customer_id) AS unique_customers
            FROM orders GROUP BY 1
        )
        SELECT coalesce(e.order_date, d.order_date) AS day FROM expected e
        FULL OUTER JOIN daily_order_metrics d ON d.order_date = e.order_date
        WHERE e.order_date IS NULL OR d.order_date IS NULL
           OR e.order_count <> d.order_count OR e.total_revenue <> d.total_revenue
           OR e.unique_customers <> d.unique_customers
           OR d.avg_order_value <> round(CAST(e.total_revenue AS DECIMAL(38, 10)) / e.order_count, 2)
        ORDER BY 1 LIMIT 1000
        """
    ).fetchall()
    return _offending_rows(
        rows,
        "mismatched_days",
        "{n} day(s) differ from a recomputation from orders",
        "daily_order_metrics equals a recomputation from orders",
    )
