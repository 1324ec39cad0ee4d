"""daily_order_metrics brought forward by a pass's new orders, without re-reading their days.

Only OrderCreated changes a day's figures: an order counts on the UTC day it was created,
whatever its status, and its total and customer never change. So a pass adds to each created day
of the orders its raw range created their count and revenue, and the customers among them who
had no other order that day (looked up in that day's partition of ``orders`` through the
customer_id bloom filters, :func:`.delta_io.lookup`). The average is recomputed from the new
count and revenue (half-up cents, as the engines give it). A pass so costs its own orders and
their customers, not a re-aggregation of the days, which grew with the day (at 200 orders/s a
day holds 17M orders; with ~372k orders in the day the step took 176 -> 122 ms a pass,
``bench/experiments/daily_pass.py``).

The caller replaces those days in the same commit as the checkpoint, so a pass's orders are
added exactly once: a re-run after a crash finds either the checkpoint moved or nothing of the
pass in the table. Rows that appear in ``orders`` behind the checkpoint (a redrive) reach the
table through the full rebuild the redrive job runs; the scheduled recompute rewrites every day
from ``orders``, and the quality audit's ``daily_order_metrics_match_orders`` compares the two.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from cqrs_dagster.domain.money import CENT

from .delta_io import lookup
from .schemas import DAILY_ORDER_METRICS_SCHEMA

# What a pass reads of its new orders.
NEW_ORDER_COLUMNS = ["order_id", "customer_id", "total_amount", "created_day"]
_PAIR = ["created_day", "customer_id"]


def earlier_customers(orders: DeltaTable, new: pa.Table) -> pa.Table:
    """(created_day, customer_id), once each, of the ``new`` orders' customers who have another
    order in ``orders`` on that day: already counted in the day's unique customers."""
    found: list[tuple[date, str]] = []
    new_ids = new.column("order_id")
    for day in sorted(pc.unique(new.column("created_day")).to_pylist()):
        of_day = new.filter(pc.equal(new.column("created_day"), pa.scalar(day, pa.date32())))
        customers = pc.unique(pc.drop_null(of_day.column("customer_id"))).to_pylist()
        prune = [("created_day", "=", day.isoformat())]
        rows = lookup(orders, "customer_id", customers, ["order_id", "customer_id"], prune)
        others = rows.filter(pc.invert(pc.is_in(rows.column("order_id"), new_ids)))
        found.extend((day, c) for c in sorted(set(others.column("customer_id").to_pylist())))
    return pa.table(
        {
            "created_day": pa.array([d for d, _ in found], pa.date32()),
            "customer_id": pa.array([c for _, c in found], pa.string()),
        }
    )


def add_orders(current: pa.Table, new: pa.Table, earlier: pa.Table) -> pa.Table:
    """daily_order_metrics rows of the ``new`` orders' created days: the ``current`` rows of
    those days (none for a new day) with the new orders added. ``earlier`` holds the
    (created_day, customer_id) pairs the current rows already count; a new order's customer
    adds one unique customer to its day otherwise, once."""
    totals = new.group_by("created_day").aggregate([("order_id", "count"), ("total_amount", "sum")])
    pairs = new.select(_PAIR).filter(pc.is_valid(new.column("customer_id")))
    firsts = pairs.group_by(_PAIR).aggregate([])
    if earlier.num_rows:
        firsts = firsts.join(earlier.select(_PAIR), keys=_PAIR, join_type="left anti")
    first_count = {
        r["created_day"]: int(r["customer_id_count"])
        for r in firsts.group_by("created_day").aggregate([("customer_id", "count")]).to_pylist()
    }
    before = {r["order_date"]: r for r in current.to_pylist()}
    out = []
    for r in totals.to_pylist():
        day = r["created_day"]
        old = before.get(
            day, {"order_count": 0, "total_revenue": Decimal(0), "unique_customers": 0}
        )
        count = int(old["order_count"]) + int(r["order_id_count"])
        revenue = (Decimal(old["total_revenue"]) + Decimal(r["total_amount_sum"])).quantize(CENT)
        out.append(
            {
                "order_date": day,
                "order_count": count,
                "total_revenue": revenue,
                "avg_order_value": (revenue / count).quantize(CENT, rounding=ROUND_HALF_UP),
                "unique_customers": int(old["unique_customers"]) + first_count.get(day, 0),
            }
        )
    return pa.Table.from_pylist(out, schema=DAILY_ORDER_METRICS_SCHEMA).sort_by("order_date")
