"""``catch_up`` on an engine that computes on several threads (DuckDB's): silver folds batch K
while bronze ingests batch K+1. Real Delta tables and the real local bus; the same events give
the same tables as the sequential pass, silver never reads a raw row past its batch even when
raw has committed more, and the blocking checks run in the sequential order."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.projections import pipeline
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.raw_ingest import ReadAhead, _read
from cqrs_dagster.projections.recent_raw import RecentRaw
from cqrs_dagster.projections.schemas import CUSTOMERS, ORDERS, RAW_EVENTS
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster_tests.faults.harness import normalized

from .scenario import build, fixed_clock, new_bus, new_tables

SC = build(seed=5, customers=8, orders=60)
BATCH = 40  # bus events per silver batch
RAW_BATCH = 15  # bus events per raw commit


class Sequential(DuckDBEngine):
    """The same engine, declared single-threaded: ``catch_up`` runs every step in turn."""

    concurrent = False


class Recorder:
    """PassChecks that records what it was called with and what the tables held then."""

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables
        self.calls: list[tuple[str, Any]] = []

    def raw_appended(self, after_seq: int, upto_seq: int) -> None:
        self.calls.append(("raw", (after_seq, upto_seq)))

    def tables_written(self, ranges: Mapping[str, tuple[int, int]]) -> None:
        held = {t: txn(self.tables.open(t), seq_app_id(t)) for t in ranges}
        self.calls.append(("silver", (dict(ranges), held)))


def _published(path: Path) -> tuple[TableStore, LocalEventBus]:
    bus = new_bus(path / "bus.sqlite")
    # Every 4th event twice: a batch's raw rows are fewer than its bus events, so a silver step
    # bounded by events alone would reach into the next batch's rows.
    bus.publish([e for i, e in enumerate(SC.events) for _ in range(2 if i % 4 == 0 else 1)])
    return new_tables(path / "delta"), bus


def test_overlapped_pass_equals_the_sequential_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DuckDBEngine.concurrent and not Sequential.concurrent
    made: list[ReadAhead] = []

    class Recorded(ReadAhead):
        def __init__(self, bus: EventBus, engine: ProjectionEngine) -> None:
            super().__init__(bus, engine)
            made.append(self)

    monkeypatch.setattr(pipeline, "ReadAhead", Recorded)
    results = {}
    for name, engine in (("overlapped", DuckDBEngine()), ("sequential", Sequential())):
        tables, bus = _published(tmp_path / name)
        ctx = StepContext(tables, "pass", engine=engine, clock=fixed_clock)
        out = catch_up(ctx, bus, max_events=10_000, batch_size=BATCH, raw_batch_size=RAW_BATCH)
        bus.close()
        results[name] = (normalized(tables), [(r.table, r.events_read) for r in out.reports])
    # the overlapped pass took its raw reads from the read-ahead (full reads of 15: 15, 15, 10)
    assert len(made) == 1 and made[0].taken >= 2 * (len(SC.events) // BATCH)
    assert results["overlapped"][0] == results["sequential"][0]
    assert len(results["overlapped"][0][ORDERS]) == len(SC.orders)
    # the same steps with the same reads, raw of a batch reported before its silver
    assert sorted(results["overlapped"][1]) == sorted(results["sequential"][1])


def test_silver_stops_at_its_batch_while_raw_commits_the_next(tmp_path: Path) -> None:
    tables, bus = _published(tmp_path)
    committed = threading.Condition()
    raw_commits = [0]
    paused = {"done": False, "overlapped": False}

    def fault(point: str) -> None:
        if point == "raw.after_commit":
            with committed:
                raw_commits[0] += 1
                committed.notify_all()
        elif point == "orders.before_read" and not paused["done"]:
            # Hold the first silver step until bronze has committed the next batch's rows.
            paused["done"] = True
            with committed:
                seen = raw_commits[0]
                paused["overlapped"] = committed.wait_for(lambda: raw_commits[0] > seen, 30)

    recorder = Recorder(tables)
    ctx = StepContext(tables, "pass", fault=fault, clock=fixed_clock)
    out = catch_up(
        ctx, bus, max_events=10_000, batch_size=BATCH, raw_batch_size=RAW_BATCH, checks=recorder
    )
    bus.close()
    assert paused["overlapped"], "bronze did not commit while silver waited"
    raw_upto = [arg[1] for kind, arg in recorder.calls if kind == "raw"]
    silver = [arg for kind, arg in recorder.calls if kind == "silver"]
    assert len(raw_upto) == len(silver) > 2
    previous = -1
    for upto, (ranges, held) in zip(raw_upto, silver, strict=True):
        for table in (ORDERS, CUSTOMERS):
            after, end = ranges[table]
            assert (after, end) == (previous, upto)  # each batch's range, in turn
            assert held[table] == upto  # and not a raw row past it
        previous = upto
    # Checks in the sequential order: a batch's raw checks before its silver checks.
    # Overlapped: batch K+1's raw checks come before batch K's silver checks, which come before
    # batch K+1's silver starts.
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["raw"] + ["raw", "silver"] * (len(silver) - 1) + ["silver"]
    raw = tables.open(RAW_EVENTS)
    assert txn(raw, seq_app_id(RAW_EVENTS)) == raw_upto[-1] == len(SC.events) - 1
    assert sum(r.events_read for r in out.reports if r.table == RAW_EVENTS) > len(SC.events)


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_failing_silver_step_fails_the_pass_after_waiting_for_it(
    tmp_path: Path, concurrent: bool
) -> None:
    tables, bus = _published(tmp_path)

    class Boom(Exception):
        pass

    def fault(point: str) -> None:
        if point == "customers.before_merge":
            raise Boom(point)

    engine = DuckDBEngine() if concurrent else Sequential()
    ctx = StepContext(tables, "pass", engine=engine, fault=fault, clock=fixed_clock)
    with pytest.raises(Boom):
        catch_up(ctx, bus, max_events=10_000, batch_size=BATCH, raw_batch_size=RAW_BATCH)
    bus.close()
    # customers never committed; orders of the first batch did; no step runs after the pass
    assert txn(tables.open(CUSTOMERS), seq_app_id(CUSTOMERS)) == -1
    orders_at = txn(tables.open(ORDERS), seq_app_id(ORDERS))
    assert orders_at > 0
    threads = [t.name for t in threading.enumerate() if t.name.startswith("catch-up")]
    assert threads == []


def test_read_ahead_gives_only_the_read_it_was_started_for(tmp_path: Path) -> None:
    _, bus = _published(tmp_path)
    engine = DuckDBEngine()
    start = {0: -1, 1: -1, 2: -1}
    with ReadAhead(bus, engine) as ahead:
        assert ahead.take(start, 10) is None  # nothing started
        ahead.start(start, 10)
        got = ahead.take(start, 10)
        assert got is not None
        direct = _read(bus, engine, start, 10)
        assert got[0].bodies == direct[0].bodies and len(got[0]) == 10
        assert got[1].equals(direct[1])
        ahead.start(start, 10)
        assert ahead.take(start, 11) is None  # another size: the caller reads afresh
        ahead.start(start, 10)
        assert ahead.take({**start, 1: 3}, 10) is None  # other positions
        assert ahead.taken == 1
        bus.close()
        ahead.start(start, 10)  # the read fails on the worker: the caller reads and sees why
        assert ahead.take(start, 10) is None
    threads = [t.name for t in threading.enumerate() if t.name.startswith("raw-read-ahead")]
    assert threads == []


@pytest.mark.parametrize(("limit", "kept"), [(10_000, True), (20, False)])
def test_the_raw_cache_is_dropped_before_gold_when_gold_cannot_use_it(
    tmp_path: Path, limit: int, kept: bool
) -> None:
    """Gold reads raw from its checkpoint, at or before the pass's start: when the pass appended
    more rows than the cache holds, gold reads Delta and the cache would only add to its peak."""
    tables, bus = _published(tmp_path)
    ctx = StepContext(tables, "pass", clock=fixed_clock, recent=RecentRaw(limit=limit))
    catch_up(ctx, bus, max_events=10_000, batch_size=BATCH, raw_batch_size=RAW_BATCH)
    bus.close()
    raw = tables.open(RAW_EVENTS)
    assert raw is not None
    last = txn(raw, seq_app_id(RAW_EVENTS))
    held = ctx.recent.get(raw.table_uri, last - 5, last, None)
    assert (held is not None) == kept
    if held is not None:
        assert held["ingest_seq"].to_pylist() == list(range(last - 4, last + 1))
