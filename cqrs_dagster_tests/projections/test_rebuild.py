"""Rebuilds without downtime and the replay audit, over real Delta tables in tmp dirs: a rebuild
equals the live table and switches the pointer; new readers of the logical name see the new
physical table while a reader holding the old one keeps its snapshot; a writer holding the old
table is fenced off; a crafted corruption is refused (keys reported) and fixed with force; a live
projection advancing in another thread during the rebuild loses and doubles nothing; the audit
passes on a healthy table and finds a crafted difference; rollback and dropping retired tables."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections import pointers
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.rebuild import rebuild, replay_audit
from cqrs_dagster.projections.retired import drop_retired, rollback
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDERS,
    SCHEMAS,
)
from cqrs_dagster.projections.silver import SPECS, merge_rows, project_customers, project_orders
from cqrs_dagster.projections.tables import TableStore

from .scenario import Scenario, build, fixed_clock, new_bus, new_tables, poison_messages, snapshot

SC = build(seed=5, customers=6, orders=40)


def seed(bus: LocalEventBus, events: int | None = None) -> None:
    poison = poison_messages(SC)
    bus.send([OutgoingEvent(k, b) for k, b in poison])
    bus.publish(SC.events[:events])


def project_all(bus: LocalEventBus, tables: TableStore) -> None:
    catch_up(StepContext(tables, "live", clock=fixed_clock), bus, max_events=100_000, batch_size=17)


@pytest.fixture
def live(tmp_path: Path) -> tuple[LocalEventBus, TableStore]:
    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    seed(bus)
    project_all(bus, tables)
    return bus, tables


def rows(tables: TableStore, name: str) -> list[dict[str, Any]]:
    return snapshot(tables)[name]


def test_no_pointer_document_means_logical_names(tmp_path: Path) -> None:
    tables = new_tables(tmp_path / "delta")
    assert tables.physical(ORDERS) == ORDERS
    assert tables.uri(ORDERS) == f"{tmp_path / 'delta'}/orders"
    assert not (tmp_path / "delta" / pointers.DOCUMENT).exists()


@pytest.mark.parametrize("name", [ORDERS, CUSTOMERS, ORDER_SUMMARY, DAILY_ORDER_METRICS])
def test_rebuild_equals_live_and_switches(
    live: tuple[LocalEventBus, TableStore], name: str
) -> None:
    _, tables = live
    before = snapshot(tables)
    seen: list[tuple[int, int]] = []
    report = rebuild(
        tables, name, run_id="rb", batch_size=13, progress=lambda d, t: seen.append((d, t))
    )
    assert report.switched and report.equal and report.comparison.differing_keys == 0
    assert report.old_physical == name and report.new_physical.startswith(f"{name}__r")
    assert tables.physical(name) == report.new_physical
    assert tables.uri(name).endswith("/" + report.new_physical)
    assert snapshot(tables) == before  # every table, the rebuilt one read through the pointer
    assert seen and seen[-1][0] == seen[-1][1]
    assert report.comparison.checkpoint == txn(tables.open(name), seq_app_id(name))
    doc = json.loads((Path(tables.root) / pointers.DOCUMENT).read_text())
    assert doc["tables"] == {name: report.new_physical}
    assert [r["physical"] for r in doc["retired"]] == [name]
    assert (Path(tables.root) / name / "_delta_log").is_dir()  # kept for rollback
    assert not (Path(tables.root) / "_rebuild").exists() or not any(
        (Path(tables.root) / "_rebuild").iterdir()
    )


def test_new_readers_see_the_new_table_and_an_old_reader_keeps_its_snapshot(
    live: tuple[LocalEventBus, TableStore], tmp_path: Path
) -> None:
    bus, tables = live
    old_reader = tables.open(ORDERS)
    assert old_reader is not None
    old_rows = old_reader.to_pyarrow_table().num_rows
    report = rebuild(tables, ORDERS, run_id="rb", batch_size=50)
    more = Scenario(seed=99)
    more.register("n0", "Newcomer")
    for i in range(5):
        more.create_order(f"n{i}", "n0", [("sku1", 1, "1.00")])
    bus.publish(more.events)
    project_all(bus, tables)
    other_store = TableStore(root=tables.root)  # another process's view of the same root
    fresh = other_store.open(ORDERS)
    assert fresh is not None and fresh.table_uri.rstrip("/").endswith(report.new_physical)
    assert fresh.to_pyarrow_table().num_rows == old_rows + 5
    assert old_reader.to_pyarrow_table().num_rows == old_rows
    assert old_reader.table_uri.rstrip("/").endswith("/orders")


def test_a_writer_holding_the_old_table_is_fenced_off(
    live: tuple[LocalEventBus, TableStore],
) -> None:
    _, tables = live
    stale = tables.open(ORDERS)
    assert stale is not None
    rebuild(tables, ORDERS, run_id="rb", batch_size=50)
    ahead = txn(stale, seq_app_id(ORDERS)) + 1
    with pytest.raises(CommitFailedError):
        merge_rows(
            stale,
            SPECS[ORDERS],
            pa.Table.from_pylist([], schema=SCHEMAS[ORDERS]),
            {seq_app_id(ORDERS): ahead},
            "late",
            "project_orders",
        )


def test_a_commit_landing_on_the_old_table_after_the_switch_is_caught_up(
    live: tuple[LocalEventBus, TableStore],
) -> None:
    bus, tables = live
    more = Scenario(seed=98)
    more.register("m0", "Late")
    for i in range(4):
        more.create_order(f"m{i}", "m0", [("sku2", 2, "2.50")])
    bus.publish(more.events)
    ingest_raw_events(StepContext(tables, "live", clock=fixed_clock), bus, max_events=100)
    old_store = tables.with_overrides({ORDERS: tables.physical_uri(ORDERS)})

    def late_writer(point: str) -> None:  # resolved the pointer before the switch
        assert point == "rebuild.after_switch"
        project_orders(StepContext(old_store, "late", clock=fixed_clock), max_events=100)

    before = txn(tables.open(ORDERS), seq_app_id(ORDERS))
    report = rebuild(tables, ORDERS, run_id="rb", batch_size=50, fault=late_writer)
    old = old_store.open(ORDERS)
    new = tables.open(ORDERS)
    assert report.switched and report.comparison.checkpoint == before
    assert report.caught_up_after_switch == txn(old, seq_app_id(ORDERS)) - before > 0
    assert txn(new, seq_app_id(ORDERS)) == txn(old, seq_app_id(ORDERS))
    assert new.to_pyarrow_table().sort_by("order_id") == old.to_pyarrow_table().sort_by("order_id")
    assert {"m0", "m1", "m2", "m3"} <= set(new.to_pyarrow_table()["order_id"].to_pylist())


def corrupt(tables: TableStore) -> None:
    table = tables.open(ORDERS)
    assert table is not None
    table.update(predicate="order_id = 'o003'", updates={"status": "'Bogus'"})
    table.delete(predicate="order_id = 'o007'")


def test_corrupted_live_is_refused_then_fixed_with_force(
    live: tuple[LocalEventBus, TableStore],
) -> None:
    _, tables = live
    healthy = rows(tables, ORDERS)
    corrupt(tables)
    refused = rebuild(tables, ORDERS, run_id="rb", batch_size=50)
    assert not refused.switched and refused.comparison.differing_keys == 2
    assert refused.comparison.first_differences == ["o003", "o007"]
    assert tables.physical(ORDERS) == ORDERS
    assert not (Path(tables.root) / refused.new_physical).exists()
    forced = rebuild(tables, ORDERS, run_id="rb2", batch_size=50, force=True)
    assert forced.switched and forced.forced and forced.comparison.differing_keys == 2
    assert rows(tables, ORDERS) == healthy


def test_live_projection_advancing_during_the_rebuild_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    clean_tables = new_tables(tmp_path / "clean")
    clean_bus = new_bus(tmp_path / "clean.sqlite")
    seed(clean_bus)
    project_all(clean_bus, clean_tables)

    bus, tables = new_bus(tmp_path / "bus.sqlite"), new_tables(tmp_path / "delta")
    seed(bus, events=60)
    project_all(bus, tables)
    rest = SC.events[60:]
    turn, stepped = threading.Semaphore(0), threading.Semaphore(0)
    stop, chunks_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    conflicts = {"n": 0}

    def project_step() -> None:
        for step in (project_orders, project_customers):
            try:
                step(StepContext(tables, "live", clock=fixed_clock), max_events=5)
            except CommitFailedError:
                conflicts["n"] += 1  # fenced by the switch or raced: the next step retries

    def live_writer() -> None:
        try:
            for start in range(0, len(rest), 3):
                turn.acquire(timeout=1)  # one chunk per rebuild batch (then free-running)
                bus.publish(rest[start : start + 3])
                ingest_raw_events(
                    StepContext(tables, "live", clock=fixed_clock), bus, max_events=1000
                )
                project_step()
                stepped.release()
            chunks_done.set()
            while not stop.is_set():
                project_step()
                time.sleep(0.002)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    def progress(done: int, total: int) -> None:
        if not chunks_done.is_set():  # the live table moves between the rebuild's batches
            turn.release()
            stepped.acquire(timeout=5)

    started_at = txn(tables.open(ORDERS), seq_app_id(ORDERS))
    writer = threading.Thread(target=live_writer)
    writer.start()
    try:
        report = rebuild(tables, ORDERS, run_id="rb", batch_size=6, progress=progress)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not errors
    print(
        "DBG",
        report.caught_up_after_switch,
        conflicts,
        report.events_replayed,
        report.comparison.checkpoint,
        txn(tables.open(ORDERS), seq_app_id(ORDERS)),
    )
    assert report.switched and report.equal
    assert report.comparison.checkpoint > started_at  # the live table moved during the rebuild
    project_all(bus, tables)  # drain whatever the live writer left
    got, want = snapshot(tables), snapshot(clean_tables)
    ids = [r["order_id"] for r in got[ORDERS]]
    assert len(ids) == len(set(ids))
    for name in (ORDERS, CUSTOMERS, ORDER_SUMMARY, DAILY_ORDER_METRICS, DEAD_LETTER_EVENTS):
        assert got[name] == want[name], name  # raw_events: same events, other ingest order


def test_audit_passes_on_a_healthy_table_and_writes_nothing_live(
    live: tuple[LocalEventBus, TableStore], tmp_path: Path
) -> None:
    _, tables = live
    before = sorted(p.name for p in Path(tables.root).iterdir())
    for name in (ORDERS, CUSTOMERS):
        report = replay_audit(tables, name, run_id="audit", scratch_root=str(tmp_path / "scratch"))
        assert report.passed and report.rows == len(rows(tables, name))
        assert report.checkpoint == txn(tables.open(name), seq_app_id(name))
    assert sorted(p.name for p in Path(tables.root).iterdir()) == before
    assert list((tmp_path / "scratch").iterdir()) == []


def test_audit_reports_a_crafted_difference(
    live: tuple[LocalEventBus, TableStore], tmp_path: Path
) -> None:
    _, tables = live
    corrupt(tables)
    report = replay_audit(tables, ORDERS, run_id="audit", scratch_root=str(tmp_path / "s"))
    assert not report.passed
    assert report.differing_keys == 2 and report.first_differences == ["o003", "o007"]
    with pytest.raises(ValueError, match="replay audit covers"):
        replay_audit(tables, ORDER_SUMMARY, run_id="audit", scratch_root=str(tmp_path / "s"))


def test_rollback_then_drop_retired(live: tuple[LocalEventBus, TableStore]) -> None:
    _, tables = live
    before = rows(tables, CUSTOMERS)
    report = rebuild(tables, CUSTOMERS, run_id="rb", batch_size=50)
    assert rollback(tables, CUSTOMERS, run_id="rb") == CUSTOMERS
    assert tables.physical(CUSTOMERS) == CUSTOMERS
    assert rows(tables, CUSTOMERS) == before
    assert drop_retired(tables, older_than_hours=1) == []  # too recent
    assert drop_retired(tables) == [report.new_physical]
    assert not (Path(tables.root) / report.new_physical).exists()
    assert (Path(tables.root) / CUSTOMERS / "_delta_log").is_dir()
    assert rows(tables, CUSTOMERS) == before


def test_switch_refuses_a_stale_expectation(tmp_path: Path) -> None:
    tables = new_tables(tmp_path / "delta")
    assert tables.switch(ORDERS, "orders__r1", expected=ORDERS) == ORDERS
    with pytest.raises(ValueError, match="not switched"):
        tables.switch(ORDERS, "orders__r2", expected=ORDERS)
    assert tables.physical(ORDERS) == "orders__r1"
    leftovers = [p.name for p in (tmp_path / "delta").iterdir() if p.name.startswith(".")]
    assert leftovers == [f".{pointers.DOCUMENT}.lock"]  # no temp file left behind


def test_rebuild_of_a_table_never_projected_is_refused(tmp_path: Path) -> None:
    tables = new_tables(tmp_path / "delta")
    with pytest.raises(ValueError, match="no live table"):
        rebuild(tables, ORDERS, run_id="rb")
