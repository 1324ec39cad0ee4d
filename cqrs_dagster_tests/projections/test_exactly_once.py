"""Exactly-once effect: for every fault point, a crash then a re-run gives tables equal (sorted,
all columns) to one clean pass over the same bus; duplicated and re-ordered deliveries (a
republished batch, orders before their customer, a customer rename after its orders) give the
clean-pass read models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDERS,
)
from cqrs_dagster.projections.tables import TableStore

from .scenario import build, fixed_clock, new_bus, new_tables, poison_messages, snapshot

SC = build(seed=11, customers=5, orders=20)
BATCH = 23
POINTS = [
    ("raw.before_dead_letters", 2),
    ("raw.before_commit", 2),
    ("raw.after_commit", 2),
    ("orders.before_dead_letters", 2),
    ("orders.before_merge", 2),
    ("orders.after_append", 1),
    ("orders.after_append", 2),
    ("orders.after_merge", 1),
    ("customers.after_append", 2),
    ("customers.before_merge", 2),
    ("customers.after_merge", 2),
    ("order_summary.before_merge", 1),
    ("order_summary.after_merge", 1),
    ("daily_order_metrics.before_commit", 1),
    ("daily_order_metrics.after_commit", 1),
]


class Crash(Exception):
    pass


def seeded_bus(path: Path) -> LocalEventBus:
    bus = new_bus(path)
    poison = poison_messages(SC)
    bus.send([OutgoingEvent(k, b) for k, b in poison[:2]])
    bus.publish(SC.events[:30])
    bus.send([OutgoingEvent(k, b) for k, b in poison[2:]])
    bus.publish(SC.events[30:])
    return bus


def run(
    bus: LocalEventBus,
    tables: TableStore,
    fault: Any = None,
    engine: ProjectionEngine | None = None,
) -> None:
    extra = {} if engine is None else {"engine": engine}
    catch_up(
        StepContext(tables, "run", fault=fault, clock=fixed_clock, **extra),
        bus,
        max_events=10_000,
        batch_size=BATCH,
    )


@pytest.fixture(scope="module", params=["duckdb", "spark"])
def engine(request: pytest.FixtureRequest) -> ProjectionEngine:
    """Each fault test runs on both engines; the clean pass it is compared with is DuckDB's, so
    the Spark runs also check parity. Spark runs on the session's Sail server."""
    if request.param == "duckdb":
        return DuckDBEngine()
    from cqrs_dagster.projections.engines.spark import SparkEngine

    return SparkEngine(request.getfixturevalue("spark_session"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("clean")
    tables = new_tables(root / "delta")
    run(seeded_bus(root / "bus.sqlite"), tables)
    return snapshot(tables)


def test_clean_pass_is_complete(clean: dict[str, list[dict[str, Any]]]) -> None:
    assert len(clean[ORDERS]) == len(SC.orders) + 1  # + the upcast legacy order
    assert len(clean[CUSTOMERS]) == len(SC.customers)
    stages = sorted(d["stage"] for d in clean[DEAD_LETTER_EVENTS])
    assert stages == ["orders", "orders"] + ["raw_events"] * 4


@pytest.mark.parametrize(("point", "nth"), POINTS)
def test_crash_then_rerun_equals_clean_pass(
    tmp_path: Path,
    clean: dict[str, list[dict[str, Any]]],
    point: str,
    nth: int,
    engine: ProjectionEngine,
) -> None:
    bus, tables = seeded_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    hits = {"n": 0}

    def fault(at: str) -> None:
        if at == point:
            hits["n"] += 1
            if hits["n"] == nth:
                raise Crash(at)

    with pytest.raises(Crash):
        run(bus, tables, fault, engine)
    run(bus, tables, engine=engine)
    assert snapshot(tables) == clean


def test_republished_and_reordered_deliveries_give_the_clean_read_models(
    tmp_path: Path, clean: dict[str, list[dict[str, Any]]], engine: ProjectionEngine
) -> None:
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    poison = poison_messages(SC)
    orders_first = [e for e in SC.events if e.aggregate_type == "Order"]
    customers_after = [e for e in SC.events if e.aggregate_type == "Customer"]
    bus.send([OutgoingEvent(k, b) for k, b in poison])
    bus.publish(orders_first[:40])
    run(bus, tables, engine=engine)  # orders whose customer is not known yet
    bus.publish(orders_first[:25])  # a republished batch
    bus.publish(orders_first[40:])
    run(bus, tables, engine=engine)
    bus.publish(customers_after)  # registrations and renames after their orders
    bus.publish(customers_after[:3])
    run(bus, tables, engine=engine)
    got = snapshot(tables)
    for name in (ORDERS, CUSTOMERS, ORDER_SUMMARY, DAILY_ORDER_METRICS):
        assert got[name] == clean[name], name
    assert all(r["customer_name"] is not None for r in got[ORDER_SUMMARY])


def test_new_keys_are_appended_and_only_existing_keys_merged(tmp_path: Path) -> None:
    """A batch of new keys rewrites no file (an append, sorted by key); a batch updating some
    keys MERGEs only those: the new keys' files stay as written."""
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    created = [e for e in SC.events if e.event_type == "CustomerRegistered"]
    renamed = [e for e in SC.events if e.event_type == "CustomerUpdated"]
    bus.publish(created)
    run(bus, tables)
    customers = tables.open(CUSTOMERS)
    assert customers is not None
    history = [h["operation"] for h in customers.history()]
    assert "MERGE" not in history and history[0] == "WRITE"
    keys = customers.to_pyarrow_table().column("customer_id").to_pylist()
    assert keys == sorted(keys)  # one appended file, in key order
    assert customers.transaction_version("customers/appended_seq") is not None
    bus.publish(renamed)
    run(bus, tables)
    customers = tables.open(CUSTOMERS)
    assert customers is not None
    assert customers.history(1)[0]["operation"] == "MERGE"
    assert customers.transaction_version("customers/ingest_seq") == len(created + renamed) - 1
