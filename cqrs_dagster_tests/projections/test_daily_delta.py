"""daily_order_metrics pass by pass: each pass adds the orders it created to their days
(:mod:`cqrs_dagster.projections.daily_delta`) and the table equals a recomputation from orders
after every pass, without handing the days' orders to the engine."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.daily_delta import add_orders
from cqrs_dagster.projections.engines.duckdb import DuckDBEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import DAILY_ORDER_METRICS, DAILY_ORDER_METRICS_SCHEMA, ORDERS
from cqrs_dagster.projections.tables import TableStore

from .scenario import (
    build,
    expected_daily,
    fixed_clock,
    new_bus,
    new_tables,
    poison_messages,
    snapshot,
)


def recomputed(tables: TableStore) -> list[dict[str, Any]]:
    """Every day's figures from the rows of the orders table (see :func:`.scenario.expected_daily`)."""
    return expected_daily(
        {
            r["order_id"]: {
                "createdAt": r["created_date"].isoformat(),
                "totalAmount": str(r["total_amount"]),
                "customerId": r["customer_id"],
            }
            for r in snapshot(tables)[ORDERS]
        }
    )


class CountingEngine(DuckDBEngine):
    """The shipped engine, counting the orders handed to its whole-day aggregation."""

    def __init__(self) -> None:
        super().__init__()
        self.aggregated: list[int] = []

    def daily_metrics(self, orders: pa.Table) -> pa.Table:
        self.aggregated.append(orders.num_rows)
        return super().daily_metrics(orders)


def test_pass_by_pass_the_days_equal_a_recomputation_from_orders(tmp_path: Path) -> None:
    sc = build(seed=31, customers=4, orders=70)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    engine = CountingEngine()
    step = 23
    chunks = [sc.events[i : i + step] for i in range(0, len(sc.events), step)]
    # a customer's orders of one day spread over several passes: the later ones must not count
    # that customer again
    chunk_of = {e.aggregate_id: n for n, c in enumerate(chunks) for e in c
                if e.event_type == "OrderCreated"}  # fmt: skip
    passes_per_pair: dict[tuple[date, str], set[int]] = {}
    for oid, o in sc.orders.items():
        key = (pd.Timestamp(str(o["createdAt"])).date(), str(o["customerId"]))
        passes_per_pair.setdefault(key, set()).add(chunk_of[oid])
    assert sum(len(p) > 1 for p in passes_per_pair.values()) >= 3
    assert len({day for day, _ in passes_per_pair}) >= 2

    for n, chunk in enumerate(chunks):
        bus.publish(chunk)
        if n == 2:  # dead-lettered and upcast OrderCreated events among them
            bus.send([OutgoingEvent(key, body) for key, body in poison_messages(sc)])
        ctx = StepContext(tables, f"r{n}", clock=fixed_clock, engine=engine)
        catch_up(ctx, bus, max_events=10_000, first=n == 0)
        got = sorted(snapshot(tables)[DAILY_ORDER_METRICS], key=lambda r: r["order_date"])
        assert got == recomputed(tables), f"after pass {n}"
    # the first pass built the table whole; no later pass handed a day's orders to the engine
    assert len(engine.aggregated) == 1
    operations = [
        e["cqrs.operation"]
        for e in reversed(tables.open(DAILY_ORDER_METRICS).history())  # type: ignore[union-attr]
        if "cqrs.operation" in e
    ]
    assert operations[0] == "build_daily_order_metrics_first"
    assert operations[1:].count("build_daily_order_metrics") == len(chunks) - 1


def _orders(rows: list[tuple[str, str | None, str, date]]) -> pa.Table:
    return pa.table(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "total_amount": pa.array([Decimal(r[2]) for r in rows], pa.decimal128(18, 2)),
            "created_day": pa.array([r[3] for r in rows], pa.date32()),
        }
    )


D1, D2 = date(2026, 12, 5), date(2026, 12, 6)


def _pairs(rows: list[tuple[date, str]]) -> pa.Table:
    return pa.table(
        {
            "created_day": pa.array([d for d, _ in rows], pa.date32()),
            "customer_id": pa.array([c for _, c in rows], pa.string()),
        }
    )


@pytest.mark.parametrize("earlier", [[], [(D2, "c1")]])
def test_added_orders_count_each_new_customer_of_a_day_once(
    earlier: list[tuple[date, str]],
) -> None:
    current = pa.Table.from_pylist(
        [
            {
                "order_date": D2,
                "order_count": 3,
                "total_revenue": Decimal("10.00"),
                "avg_order_value": Decimal("3.33"),
                "unique_customers": 2,
            }
        ],
        schema=DAILY_ORDER_METRICS_SCHEMA,
    )
    new = _orders(
        [
            ("o1", "c1", "0.05", D2),  # c1: earlier that day, or not
            ("o2", "c1", "0.00", D2),  # the same customer again in the pass: once at most
            ("o3", "c9", "1.00", D1),  # a day with no row yet
            ("o4", None, "2.00", D1),  # no customer: counted as an order, not a customer
        ]
    )
    rows = add_orders(current, new, _pairs(earlier)).to_pylist()
    assert rows == [
        {
            "order_date": D1,
            "order_count": 2,
            "total_revenue": Decimal("3.00"),
            "avg_order_value": Decimal("1.50"),
            "unique_customers": 1,
        },
        {
            "order_date": D2,
            "order_count": 5,
            "total_revenue": Decimal("10.05"),
            "avg_order_value": Decimal("2.01"),  # 2.01 exactly; half-up on the next
            "unique_customers": 2 if earlier else 3,
        },
    ]


def test_the_average_rounds_half_up_to_the_cent() -> None:
    empty = DAILY_ORDER_METRICS_SCHEMA.empty_table()
    rows = add_orders(
        empty, _orders([("o1", "a", "0.01", D1), ("o2", "b", "0.04", D1)]), _pairs([])
    )
    assert rows.to_pylist()[0]["avg_order_value"] == Decimal("0.03")  # 0.025 -> 0.03
