"""Gold rows with Arrow compute: order_summary (a join) and daily_order_metrics (a group-by);
a whole order_summary streamed by DuckDB from the silver tables' Parquet files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import pyarrow as pa

from cqrs_dagster.domain.money import CENT

from ...schemas import (
    DAILY_ORDER_METRICS_SCHEMA,
    ORDER_SUMMARY_SCHEMA,
    ORDER_SUMMARY_SOURCE_COLUMNS,
)
from .connection import bounded_duck, bounded_memory, duck, out_of_memory

log = logging.getLogger(__name__)

STREAM_BATCH_ROWS = 65_536


def summary_rows(orders: pa.Table, customers: pa.Table) -> pa.Table:
    """order_summary rows: orders joined to their customer's name (null until it is known)."""
    names = customers.select(["customer_id", "name"]).rename_columns(
        ["customer_id", "customer_name"]
    )
    joined = orders.join(names, "customer_id", join_type="left outer")
    return joined.select(ORDER_SUMMARY_SCHEMA.names).cast(ORDER_SUMMARY_SCHEMA).sort_by("order_id")


def summary_stream(order_files: list[str], customer_files: list[str]) -> pa.RecordBatchReader:
    """:func:`summary_rows` of every order in ``order_files`` (the orders table's live Parquet
    files) joined to ``customer_files``', computed by DuckDB and streamed in batches of
    :data:`STREAM_BATCH_ROWS`: no Arrow copy of every order is held (1M-event catch-up, 310k
    orders: the first build's extra resident memory ~380 -> ~220 MiB, 0.8 -> 0.3 s). Byte order
    on order_id, like Arrow's sort; every column cast to the order_summary schema.

    The query runs on the bounded database (:func:`.connection.bounded_duck`), so a sort larger
    than its bound spills to disk instead of growing the process (5M orders: peak ~1.4 -> ~0.8
    GiB). If DuckDB cannot fit the query in the bound, before the first row or between two
    batches, the stream goes on from the unbounded database after the last order_id it handed
    over (order_id is the orders table's key: nothing is repeated or skipped), and says so."""
    params: dict[str, object] = {"orders": order_files, "customers": customer_files}

    def batches() -> Iterator[pa.RecordBatch]:
        last: str | None = None
        bounded = True
        while True:
            con = bounded_duck() if bounded else duck()
            try:
                after = {} if last is None else {"after": last}
                rel = con.sql(_summary_sql(last is not None), params=params | after)
                for batch in rel.to_arrow_reader(STREAM_BATCH_ROWS):
                    if batch.num_rows:
                        table = pa.Table.from_batches([batch]).select(ORDER_SUMMARY_SCHEMA.names)
                        last = table.column("order_id")[-1].as_py()
                        yield from table.cast(ORDER_SUMMARY_SCHEMA).to_batches()
                return
            except Exception as exc:
                if not bounded or not out_of_memory(exc):
                    raise
                log.warning(
                    "order_summary's whole build does not fit DuckDB's %s bound (%s): going on "
                    "without the bound%s",
                    bounded_memory(),
                    str(exc).splitlines()[0],
                    "" if last is None else f" after order {last}",
                )
                bounded = False
            finally:
                con.close()

    return pa.RecordBatchReader.from_batches(ORDER_SUMMARY_SCHEMA, batches())


def _summary_sql(resumed: bool) -> str:
    cols = ", ".join(f'o."{c}"' for c in ORDER_SUMMARY_SOURCE_COLUMNS)
    return (
        f"SELECT {cols}, c.name AS customer_name "
        "FROM read_parquet($orders, union_by_name = true) o "
        "LEFT JOIN read_parquet($customers, union_by_name = true) c USING (customer_id) "
        + ("WHERE o.order_id > $after " if resumed else "")
        + "ORDER BY o.order_id"
    )


def daily_metrics(orders: pa.Table) -> pa.Table:
    """Per created day: order count, revenue, average order value (half-up cents), customers."""
    grouped = orders.group_by("created_day").aggregate(
        [
            ("order_id", "count"),
            ("total_amount", "sum"),
            ("customer_id", "count_distinct"),
        ]
    )
    out = []
    for row in grouped.to_pylist():
        count = int(row["order_id_count"])
        revenue = Decimal(row["total_amount_sum"]).quantize(CENT)
        out.append(
            {
                "order_date": row["created_day"],
                "order_count": count,
                "total_revenue": revenue,
                "avg_order_value": (revenue / count).quantize(CENT, rounding=ROUND_HALF_UP),
                "unique_customers": int(row["customer_id_count_distinct"]),
            }
        )
    return pa.Table.from_pylist(out, schema=DAILY_ORDER_METRICS_SCHEMA).sort_by("order_date")
