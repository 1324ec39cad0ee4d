"""Parity of the two projection engines (issue 12, item 3): one seeded event stream, projected by
the DuckDB engine and by the Spark engine (Sail) in lockstep, gives IDENTICAL Delta tables: every
read model and the dead letters, every column (Arrow types included: decimal(18,2), timestamps
in UTC, nulls), no column ignored.

The stream mixes (three sends, each followed by a catch-up of both engines in batches of 37):

- the write side's own events for a seeded ``CommandModel`` (registrations, renames, orders
  created, paid, shipped, delivered, CANCELLED), handled by the real command handler and
  published by the test in a chosen order: orders BEFORE their customers' registrations and
  renames, one order's updates REVERSED (version 3 before 2), republished slices (DUPLICATES);
- the engine contract's stream: POISON (invalid JSON, a non-object, unknown event types, invalid
  envelopes, fold rejections), UPCASTS (schemaVersion 0), duplicate and late deliveries, an
  out-of-order update, bodies with repeated JSON keys.

Both engines must also have computed part of it themselves (decoded bodies, folded keys): a
parity that only the shared Python path produced would prove nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.engine import FoldOutput, ProjectionEngine
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import (
    ALL_TABLES,
    DEAD_LETTER_EVENTS,
    MONEY,
    ORDER_SUMMARY,
    ORDERS,
    SCHEMAS,
)
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster_tests.contracts.engine_contract import SORT_KEY, fixed_clock, stream
from cqrs_dagster_tests.faults.harness import CommandModel, committed_events, handle, local_settings

BATCH = 37
PARTITIONS = 3


class Counting(ProjectionEngine):
    """Delegates to ``inner`` and counts what it computed itself (fast decodes, folded keys)."""

    def __init__(self, inner: ProjectionEngine) -> None:
        self.inner, self.name = inner, inner.name
        self.decoded = self.folded = self.gold_rows = 0

    def decode(self, bodies: Sequence[bytes], canonical: Sequence[bool] | None = None) -> pa.Table:
        out = self.inner.decode(bodies, canonical)
        self.decoded += int(pc.sum(out.column("fast")).as_py() or 0)
        return out

    def fold(self, table: str, events: pa.Table, current: pa.Table) -> FoldOutput:
        out = self.inner.fold(table, events, current)
        self.folded += out.rows.num_rows
        return out

    def order_summary(self, orders: pa.Table, customers: pa.Table) -> pa.Table:
        out = self.inner.order_summary(orders, customers)
        self.gold_rows += out.num_rows
        return out

    def daily_metrics(self, orders: pa.Table) -> pa.Table:
        out = self.inner.daily_metrics(orders)
        self.gold_rows += out.num_rows
        return out


def sends(events: list[EventEnvelope]) -> list[list[OutgoingEvent]]:
    """The three sends of the stream (see the module docstring)."""
    orders = [e for e in events if e.aggregate_type == "Order"]
    customers = [e for e in events if e.aggregate_type == "Customer"]
    half = len(orders) // 2
    # one order with at least three events: its updates delivered newest first
    counts: dict[str, int] = {}
    for e in orders[half:]:
        counts[e.aggregate_id] = counts.get(e.aggregate_id, 0) + 1
    flipped = next(k for k, n in counts.items() if n >= 3)
    late = [e for e in orders[half:] if e.aggregate_id != flipped]
    mine = [e for e in orders[half:] if e.aggregate_id == flipped]
    late += [mine[0], *reversed(mine[1:])]
    contract = [[OutgoingEvent(k, b) for k, b in send] for send in stream()]

    def of(envelopes: Sequence[EventEnvelope]) -> list[OutgoingEvent]:
        return [OutgoingEvent.of(e) for e in envelopes]

    return [
        contract[0] + of(orders[:half]),  # orders before their customers
        contract[1] + of(customers) + of(orders[:10]),  # registrations, renames; a republish
        contract[2] + of(late) + of(customers[:5]),  # version 3 before 2; another republish
    ]


def write_side_events(data_dir: Path) -> list[EventEnvelope]:
    """The events a seeded CommandModel's commands commit through the real command handler."""
    settings = local_settings(data_dir, PARTITIONS)
    model = CommandModel(random.Random(12), prefix="p")
    assert handle(settings, model.batch(90)) > 60
    return committed_events(settings)


def seeded_bus(root: Path) -> LocalEventBus:
    """A bus holding the whole stream (the three sends at once)."""
    bus = LocalEventBus(root / "bus.sqlite", partition_count=PARTITIONS)
    for send in sends(write_side_events(root / "write")):
        bus.send(send)
    return bus


@pytest.fixture(scope="module")
def projected(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, tuple[TableStore, Counting]]]:
    root = tmp_path_factory.mktemp("parity")
    events = write_side_events(root / "write")
    from cqrs_dagster.projections.engines.spark import SparkEngine

    spark_session = request.getfixturevalue("spark_session")
    engines = {
        "duckdb": Counting(DuckDBEngine()),
        "spark": Counting(
            SparkEngine(spark_session, request.getfixturevalue("sail_server").remote)
        ),
    }
    tables = {name: TableStore(str(root / name)) for name in engines}
    bus = LocalEventBus(root / "bus.sqlite", partition_count=PARTITIONS)
    try:
        for send in sends(events):
            bus.send(send)
            for name, engine in engines.items():  # lockstep: both read the same bus contents
                ctx = StepContext(tables[name], "parity", engine=engine, clock=fixed_clock)
                catch_up(ctx, bus, max_events=100_000, batch_size=BATCH)
        yield {name: (tables[name], engines[name]) for name in engines}
    finally:
        bus.close()
        engines["duckdb"].inner.close()


def sorted_table(tables: TableStore, name: str) -> pa.Table:
    table = tables.open(name)
    assert table is not None, f"{name} was never written"
    return table.to_pyarrow_table().sort_by(SORT_KEY[name])


def first_difference(a: pa.Table, b: pa.Table, key: str) -> str:
    for x, y in zip(a.to_pylist(), b.to_pylist(), strict=False):
        if x != y or any(repr(x[k]) != repr(y[k]) for k in x):
            cols = {k: (x[k], y.get(k)) for k in x if repr(x[k]) != repr(y.get(k))}
            return f"row {x[key]!r}: {cols}"
    return f"{a.num_rows} rows vs {b.num_rows}"


@pytest.mark.parametrize("name", ALL_TABLES)
def test_both_engines_give_identical_tables(
    projected: dict[str, tuple[TableStore, Counting]], name: str
) -> None:
    duck = sorted_table(projected["duckdb"][0], name)
    spark = sorted_table(projected["spark"][0], name)
    assert spark.schema.equals(duck.schema), f"{spark.schema} != {duck.schema}"
    assert spark.schema.names == SCHEMAS[name].names
    for field in spark.schema:  # timestamps in UTC, money as decimal(18,2)
        if pa.types.is_timestamp(field.type):
            assert field.type.tz == "UTC", field
        if pa.types.is_decimal(field.type):
            assert field.type == MONEY, field
    assert duck.num_rows > 0
    assert spark.equals(duck), first_difference(spark, duck, SORT_KEY[name])


def test_the_stream_holds_what_parity_is_about(
    projected: dict[str, tuple[TableStore, Counting]],
) -> None:
    tables, _ = projected["spark"]
    orders = sorted_table(tables, ORDERS).to_pylist()
    statuses = {o["status"] for o in orders}
    assert {"Created", "Paid", "Cancelled"} <= statuses
    letters = sorted_table(tables, DEAD_LETTER_EVENTS).to_pylist()
    assert {"raw_events", "orders", "customers"} <= {d["stage"] for d in letters}
    summary = sorted_table(tables, ORDER_SUMMARY)
    assert summary.column("customer_name").null_count > 0  # an order whose customer never came
    assert any(o["order_id"] == "o4" for o in orders)  # the upcast legacy order


def test_each_engine_computed_its_share(projected: dict[str, tuple[TableStore, Counting]]) -> None:
    for name, (_, engine) in projected.items():
        assert engine.decoded > 60, (name, engine.decoded)
        assert engine.folded > 20, (name, engine.folded)
        assert engine.gold_rows > 0, (name, engine.gold_rows)
