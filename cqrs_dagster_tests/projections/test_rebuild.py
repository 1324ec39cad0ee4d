"""Rebuilds without downtime and the replay audit, over real Delta tables in tmp dirs: a rebuild
equals the live table and swaps its rows into ``<root>/<name>`` with exactly one Delta commit that
keeps the checkpoints; plain ``deltalake`` and DuckDB readers of that path see the rebuilt rows and
every later event while a reader holding an older snapshot keeps it; a writer planned before the
swap is fenced off; a projection commit racing the swap makes it retry (exactly once); a crafted
corruption is refused (keys reported) and fixed with force; a live projection advancing in
another thread during the rebuild loses and doubles nothing; the audit passes on a healthy table
and finds a crafted difference; rollback is time travel with the checkpoints."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import OutgoingEvent
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.raw_ingest import ingest_raw_events
from cqrs_dagster.projections.rebuild import SWAP, rebuild, replay_audit, rollback
from cqrs_dagster.projections.schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDERS,
    RAW_EVENTS,
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


def swaps(table: DeltaTable) -> list[int]:
    """Versions of the table's rebuild swap commits."""
    return [int(e["version"]) for e in table.history() if e.get("cqrs.operation") == SWAP]


def test_a_read_model_is_always_the_table_at_root_slash_name(tmp_path: Path) -> None:
    tables = new_tables(tmp_path / "delta")
    assert tables.uri(ORDERS) == f"{tmp_path / 'delta'}/orders"


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
    assert snapshot(tables) == before  # every table; the rebuilt one at its own path
    assert seen and seen[-1][0] == seen[-1][1]
    live = DeltaTable(f"{tables.root}/{name}")  # a plain reader of the path
    assert report.comparison.checkpoint == txn(live, seq_app_id(name))
    # exactly one commit swapped the rows in, the checkpoints carried in it
    assert swaps(live) == [report.version] == [live.version()]
    assert report.previous_version == report.version - 1 and report.swap_attempts == 1
    swap = next(e for e in live.history(1))
    assert swap["operationParameters"]["mode"] == "Overwrite" and swap["cqrs.run_id"] == "rb"
    previous = DeltaTable(f"{tables.root}/{name}", version=report.previous_version)
    assert txn(previous, seq_app_id(name)) == txn(live, seq_app_id(name))
    assert live.metadata().partition_columns == previous.metadata().partition_columns
    assert live.schema() == previous.schema()
    # no shadow, pointer document or retired copy is left under the root
    leftovers = {p.name for p in Path(tables.root).iterdir()} - set(SCHEMAS)
    assert leftovers <= {"_rebuild"} and not any((Path(tables.root) / "_rebuild").iterdir())


def test_plain_readers_of_the_path_see_the_rebuild_and_every_later_event(
    live: tuple[LocalEventBus, TableStore],
) -> None:
    bus, tables = live
    path = f"{tables.root}/{ORDERS}"
    old_reader = DeltaTable(path)
    old_rows = old_reader.to_pyarrow_table().num_rows
    corrupt(tables)  # so the rebuilt rows are distinguishable from the live ones
    report = rebuild(tables, ORDERS, run_id="rb", batch_size=50, force=True)
    assert report.switched
    more = Scenario(seed=99)
    more.register("n0", "Newcomer")
    for i in range(5):
        more.create_order(f"n{i}", "n0", [("sku1", 1, "1.00")])
    bus.publish(more.events)
    project_all(bus, tables)
    fresh = DeltaTable(path)  # another process's deltalake
    ids = fresh.to_pyarrow_table()["order_id"].to_pylist()
    assert len(ids) == len(set(ids)) == old_rows + 5
    assert {"o007", "n0", "n4"} <= set(ids)  # the rebuilt row (deleted live) and later events
    status = fresh.to_pyarrow_table().filter(pa.compute.field("order_id") == "o003")["status"]
    assert status.to_pylist() != ["Bogus"]
    # DuckDB over the same path: the Parquet files of the table's current Delta version
    con = duckdb.connect()
    files = DeltaTable(path).file_uris()
    got = con.execute(
        "SELECT count(*), count(DISTINCT order_id), count(*) FILTER (order_id IN ('o007', 'n4')) "
        "FROM read_parquet(?)",
        [files],
    ).fetchone()
    assert got == (old_rows + 5, old_rows + 5, 2)
    assert old_reader.to_pyarrow_table().num_rows == old_rows  # an old snapshot stays readable


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


def test_a_projection_commit_racing_the_swap_makes_it_retry_exactly_once(
    live: tuple[LocalEventBus, TableStore], tmp_path: Path
) -> None:
    bus, tables = live
    more = Scenario(seed=98)
    more.register("m0", "Late")
    for i in range(4):
        more.create_order(f"m{i}", "m0", [("sku2", 2, "2.50")])
    bus.publish(more.events)
    ingest_raw_events(StepContext(tables, "live", clock=fixed_clock), bus, max_events=100)
    points: list[str] = []

    def racing_writer(point: str) -> None:  # commits between the shadow's sync and the swap
        points.append(point)
        if len(points) == 1:
            assert point == "rebuild.before_swap"
            project_orders(StepContext(tables, "late", clock=fixed_clock), max_events=100)

    before = txn(tables.open(ORDERS), seq_app_id(ORDERS))
    report = rebuild(tables, ORDERS, run_id="rb", batch_size=50, fault=racing_writer)
    assert points == ["rebuild.before_swap", "rebuild.before_swap", "rebuild.after_swap"]
    assert report.switched and report.comparison.checkpoint == before
    assert report.swap_attempts == 2  # the first swap failed on the racing commit
    new = DeltaTable(f"{tables.root}/{ORDERS}")
    assert txn(new, seq_app_id(ORDERS)) > before
    assert swaps(new) == [report.version]  # one swap commit, after the racing one
    raced = DeltaTable(f"{tables.root}/{ORDERS}", version=report.previous_version)
    assert txn(raced, seq_app_id(ORDERS)) == txn(new, seq_app_id(ORDERS))
    got = new.to_pyarrow_table().sort_by("order_id")
    assert got == raced.to_pyarrow_table().sort_by("order_id").select(got.column_names)
    ids = got["order_id"].to_pylist()
    assert {"m0", "m1", "m2", "m3"} <= set(ids) and len(ids) == len(set(ids))
    project_all(bus, tables)  # the racing commit is neither lost nor applied twice
    clean_bus, clean = new_bus(tmp_path / "clean.sqlite"), new_tables(tmp_path / "clean")
    seed(clean_bus)
    clean_bus.publish(more.events)
    project_all(clean_bus, clean)
    assert rows(tables, ORDERS) == rows(clean, ORDERS)


def test_a_swap_never_lands_between_a_silver_steps_append_and_its_merge(
    live: tuple[LocalEventBus, TableStore], tmp_path: Path
) -> None:
    """A silver step appends new keys (``appended_seq``) before its MERGE moves the checkpoint:
    a swap in between would drop the appended rows while the MERGE still commits. The rebuild
    waits for the MERGE instead."""
    bus, tables = live
    more = Scenario(seed=96)
    more.register("w0", "Waiting")
    more.create_order("w1", "w0", [("sku4", 1, "4.00")])
    bus.publish(more.events)
    ingest_raw_events(StepContext(tables, "live", clock=fixed_clock), bus, max_events=100)
    path = f"{tables.root}/{ORDERS}"
    target = txn(tables.open(RAW_EVENTS), seq_app_id(RAW_EVENTS))
    swapped_at: list[int] = []
    reports: list[Any] = []

    def at_swap(point: str) -> None:
        if point == "rebuild.before_swap":
            swapped_at.append(txn(DeltaTable(path), seq_app_id(ORDERS)))

    def rebuild_now() -> None:
        reports.append(rebuild(tables, ORDERS, run_id="rb", batch_size=50, fault=at_swap))

    rebuilder = threading.Thread(target=rebuild_now)

    def after_append(point: str) -> None:
        if point == f"{ORDERS}.after_append":
            rebuilder.start()
            time.sleep(1.5)  # the rebuild reaches its swap meanwhile, and must wait

    project_orders(
        StepContext(tables, "live", clock=fixed_clock, fault=after_append), max_events=100
    )
    rebuilder.join(timeout=60)
    assert reports and reports[0].switched
    assert swapped_at and min(swapped_at) == target  # only after the MERGE moved the checkpoint
    assert {"w1"} <= {r["order_id"] for r in rows(tables, ORDERS)}
    clean_bus, clean = new_bus(tmp_path / "clean.sqlite"), new_tables(tmp_path / "clean")
    seed(clean_bus)
    clean_bus.publish(more.events)
    project_all(clean_bus, clean)
    project_all(bus, tables)
    assert rows(tables, ORDERS) == rows(clean, ORDERS)


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
    assert refused.version == -1 and swaps(DeltaTable(tables.uri(ORDERS))) == []
    assert not any((Path(tables.root) / "_rebuild").iterdir())
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
                conflicts["n"] += 1  # fenced by the swap or raced: the next step retries

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


def test_rollback_is_time_travel_with_the_checkpoints(
    live: tuple[LocalEventBus, TableStore],
) -> None:
    bus, tables = live
    corrupt(tables)
    corrupted = rows(tables, ORDERS)
    at = txn(tables.open(ORDERS), seq_app_id(ORDERS))
    report = rebuild(tables, ORDERS, run_id="rb", batch_size=50, force=True)
    assert rows(tables, ORDERS) != corrupted
    version = rollback(tables, ORDERS, run_id="rb")
    back = DeltaTable(tables.uri(ORDERS))
    assert version == back.version() == report.version + 1
    assert rows(tables, ORDERS) == corrupted and txn(back, seq_app_id(ORDERS)) == at
    more = Scenario(seed=97)
    more.register("k0", "Later")
    more.create_order("k1", "k0", [("sku3", 1, "3.00")])
    bus.publish(more.events)
    project_all(bus, tables)  # the projection moves on from the rolled-back checkpoint
    ids = [r["order_id"] for r in rows(tables, ORDERS)]
    assert "k1" in ids and len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="no rebuild"):
        rollback(tables, CUSTOMERS, run_id="rb")


def test_rebuild_of_a_table_never_projected_is_refused(tmp_path: Path) -> None:
    tables = new_tables(tmp_path / "delta")
    with pytest.raises(ValueError, match="no live table"):
        rebuild(tables, ORDERS, run_id="rb")
