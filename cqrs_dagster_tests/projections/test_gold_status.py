"""Gold tables against an independent pandas computation (incremental equals full), projection
lag in seconds and events, and redriving silver dead letters once they can apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cqrs_dagster.domain import customer
from cqrs_dagster.domain.commands import UpdateCustomer
from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.dead_letters import read_dead_letters
from cqrs_dagster.projections.gold import build_daily_order_metrics
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.redrive import redrive
from cqrs_dagster.projections.schemas import DAILY_ORDER_METRICS, ORDER_SUMMARY, ORDERS
from cqrs_dagster.projections.silver import project_orders
from cqrs_dagster.projections.status import events_behind, projection_lag
from cqrs_dagster.projections.tables import TableStore

from .scenario import (
    Scenario,
    build,
    expected_daily,
    fixed_clock,
    new_bus,
    new_tables,
    snapshot,
)


def test_gold_matches_pandas_and_incremental_equals_full(tmp_path: Path) -> None:
    sc = build(seed=21, customers=6, orders=40)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events)
    catch_up(StepContext(tables, "r", clock=fixed_clock), bus, max_events=10_000, batch_size=17)
    got = snapshot(tables)
    assert len({r["order_date"] for r in got[DAILY_ORDER_METRICS]}) >= 2
    assert sorted(got[DAILY_ORDER_METRICS], key=lambda r: r["order_date"]) == expected_daily(
        sc.orders
    )
    summary = {r["order_id"]: r for r in got[ORDER_SUMMARY]}
    assert set(summary) == set(sc.orders)
    for oid, o in sc.orders.items():
        assert summary[oid]["customer_name"] == sc.customers[o["customerId"]]["name"]
        assert summary[oid]["status"] == o["status"]
        assert summary[oid]["total_amount"] == Decimal(o["totalAmount"])
    full = build_daily_order_metrics(StepContext(tables, "full"), full=True)
    assert full.rows_written == len(got[DAILY_ORDER_METRICS])
    assert snapshot(tables)[DAILY_ORDER_METRICS] == got[DAILY_ORDER_METRICS]


def _operations(tables: TableStore, name: str) -> list[str]:
    """The ``cqrs.operation`` of each commit of ``name`` that wrote rows or checkpoints, oldest
    first."""
    table = tables.open(name)
    assert table is not None
    return [e["cqrs.operation"] for e in reversed(table.history()) if "cqrs.operation" in e]


def test_a_first_gold_build_reads_silver_whole_and_equals_the_incremental_one(
    tmp_path: Path,
) -> None:
    """Gold tables with no row yet are built from silver whole (a first catch-up, a rebuild):
    the same rows as building them pass by pass, and later passes go incremental."""
    sc = build(seed=24, customers=8, orders=60)
    half = len(sc.events) // 2
    one_pass = (new_bus(tmp_path / "a.sqlite"), new_tables(tmp_path / "a"))
    one_pass[0].publish(sc.events)
    report = catch_up(StepContext(one_pass[1], "r", clock=fixed_clock), one_pass[0],
                      max_events=10_000, batch_size=40)  # fmt: skip
    two_passes = (new_bus(tmp_path / "b.sqlite"), new_tables(tmp_path / "b"))
    two_passes[0].publish(sc.events[:half])
    catch_up(StepContext(two_passes[1], "r1", clock=fixed_clock), two_passes[0], max_events=10_000)
    two_passes[0].publish(sc.events[half:])
    catch_up(StepContext(two_passes[1], "r2", clock=fixed_clock), two_passes[0],
             max_events=10_000, first=False)  # fmt: skip

    a, b = snapshot(one_pass[1]), snapshot(two_passes[1])
    for name in (ORDER_SUMMARY, DAILY_ORDER_METRICS):
        assert a[name] == b[name] and a[name]
    assert {r["order_id"] for r in a[ORDER_SUMMARY]} == set(sc.orders)
    assert _operations(one_pass[1], ORDER_SUMMARY) == ["build_order_summary_first"]
    assert _operations(two_passes[1], ORDER_SUMMARY) == [
        "build_order_summary_first",
        "build_order_summary",
    ]
    assert _operations(one_pass[1], DAILY_ORDER_METRICS) == ["build_daily_order_metrics_first"]
    assert _operations(two_passes[1], DAILY_ORDER_METRICS) == [
        "build_daily_order_metrics_first",
        "build_daily_order_metrics",
    ]
    # a first build still reports the raw events it covers (ingest_seq is gap-free)
    gold = {r.table: r for r in report.reports if r.table in (ORDER_SUMMARY, DAILY_ORDER_METRICS)}
    assert gold[ORDER_SUMMARY].events_read == len(sc.events)
    assert gold[DAILY_ORDER_METRICS].events_read == len(sc.events)
    assert gold[ORDER_SUMMARY].rows_written == len(sc.orders)


def test_lag_in_seconds_and_events(tmp_path: Path) -> None:
    sc = build(seed=22, customers=3, orders=10)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events)
    before = projection_lag(bus, tables, ORDERS)
    assert before.events_behind == len(sc.events) and before.newest_applied_time is None
    ingest_raw_events(StepContext(tables, "r", clock=fixed_clock), bus, max_events=len(sc.events))
    project_orders(StepContext(tables, "r", clock=fixed_clock), max_events=10)
    bus.publish(sc.events[:5])  # five more on the bus, not yet ingested
    now = datetime.now(UTC) + timedelta(seconds=100)
    lag = projection_lag(bus, tables, ORDERS, now=now)
    assert lag.events_behind == 5 + (len(sc.events) - 10)
    counts = events_behind(tables, bus.partitions_info())
    assert counts[ORDERS] == lag.events_behind and counts["raw_events"] == 5
    assert lag.newest_bus_time == max(h.last_enqueued_time for h in bus.partitions_info())
    assert lag.newest_applied_time is not None and lag.oldest_unapplied_time is not None
    assert lag.newest_applied_time <= lag.oldest_unapplied_time <= lag.newest_bus_time
    assert lag.lag_seconds == (now - lag.oldest_unapplied_time).total_seconds()
    # Nothing moves: the lag keeps growing with the clock (a stuck projection is noticed).
    later = projection_lag(bus, tables, ORDERS, now=now + timedelta(seconds=60))
    assert later.lag_seconds == pytest.approx(lag.lag_seconds + 60)
    catch_up(StepContext(tables, "r", clock=fixed_clock), bus, max_events=1000)
    caught_up = projection_lag(bus, tables, ORDERS)
    assert (caught_up.events_behind, caught_up.lag_seconds) == (0, 0.0)
    assert projection_lag(bus, tables, "raw_events").events_behind == 0


def test_redrive_applies_dead_letters_that_now_fit(tmp_path: Path) -> None:
    sc = build(seed=23, customers=2, orders=3)
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    created = next(e for e in sc.events if e.event_type == "OrderCreated")
    late = EventEnvelope(
        "late-2",
        "OrderUpdated",
        "late-order",
        "Order",
        2,
        created.timestamp + timedelta(hours=1),
        "c",
        "c",
        {"orderId": "late-order", "status": "Paid"},
    )
    bus.publish(sc.events)
    bus.send([OutgoingEvent.of(late)])  # its OrderCreated is not there yet: dead letter
    catch_up(StepContext(tables, "r", clock=fixed_clock), bus, max_events=1000)
    assert len(read_dead_letters(tables, stage=ORDERS, unresolved_only=True)) == 1
    assert redrive(tables, run_id="rd") == {ORDERS: 0, "customers": 0}  # still cannot apply
    origin = EventEnvelope(
        "late-1",
        "OrderCreated",
        "late-order",
        "Order",
        1,
        created.timestamp,
        "c",
        "c",
        {**created.data, "orderId": "late-order"},
    )
    bus.send([OutgoingEvent.of(origin)])
    catch_up(StepContext(tables, "r", clock=fixed_clock), bus, max_events=1000)
    assert redrive(tables, run_id="rd")[ORDERS] == 1
    orders = {r["order_id"]: r for r in snapshot(tables)[ORDERS]}
    assert (orders["late-order"]["status"], orders["late-order"]["version"]) == ("Paid", 2)
    assert len(read_dead_letters(tables, stage=ORDERS, unresolved_only=True)) == 0
    assert redrive(tables, run_id="rd")[ORDERS] == 0  # idempotent


def test_a_rename_reaches_every_order_of_that_customer_and_an_email_change_none(
    tmp_path: Path,
) -> None:
    """order_summary follows a rename on the customer's old orders only (read by id after a
    two-column lookup); an update without a name rewrites no order."""
    sc = Scenario(seed=5)
    sc.register("c-a", "Ada")
    sc.register("c-b", "Bob")
    for i in range(3):
        sc.create_order(f"o-a{i}", "c-a", [("S", 1, "1.00")])
    sc.create_order("o-b0", "c-b", [("S", 2, "2.00")])
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    bus.publish(sc.events)
    catch_up(StepContext(tables, "r", clock=fixed_clock), bus, max_events=1000)
    start = len(sc.events)
    sc.rename("c-a", "Ada Lovelace")
    bus.publish(sc.events[start:])
    result = catch_up(StepContext(tables, "r2", clock=fixed_clock), bus, max_events=1000)
    summary_step = result.written[ORDER_SUMMARY][-1]
    assert summary_step.rows_written == 3  # Ada's three orders, not Bob's
    names = {r["order_id"]: r["customer_name"] for r in snapshot(tables)[ORDER_SUMMARY]}
    assert names == {"o-a0": "Ada Lovelace", "o-a1": "Ada Lovelace", "o-a2": "Ada Lovelace",
                     "o-b0": "Bob"}  # fmt: skip
    start = len(sc.events)
    d = customer.update(
        UpdateCustomer(type="UpdateCustomer", customerId="c-b", email="bob@y.io"),
        sc.customers["c-b"],
        sc.ctx(),
    )
    bus.publish(d.events)
    result = catch_up(StepContext(tables, "r3", clock=fixed_clock), bus, max_events=1000)
    assert result.written[ORDER_SUMMARY][-1].rows_written == 0
