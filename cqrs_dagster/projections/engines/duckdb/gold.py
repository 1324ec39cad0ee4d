"""Gold rows with Arrow compute: order_summary (a join) and daily_order_metrics (a group-by)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pyarrow as pa

from cqrs_dagster.domain.money import CENT

from ...schemas import DAILY_ORDER_METRICS_SCHEMA, ORDER_SUMMARY_SCHEMA


def summary_rows(orders: pa.Table, customers: pa.Table) -> pa.Table:
    """order_summary rows: orders joined to their customer's name (null until it is known)."""
    names = customers.select(["customer_id", "name"]).rename_columns(
        ["customer_id", "customer_name"]
    )
    joined = orders.join(names, "customer_id", join_type="left outer")
    return joined.select(ORDER_SUMMARY_SCHEMA.names).cast(ORDER_SUMMARY_SCHEMA).sort_by("order_id")


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
