"""Table maintenance compacts files and leaves every table's rows and checkpoints unchanged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cqrs_dagster.projections import maintenance, schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.maintenance import compact_small_files, maintain_all
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.status import read_checkpoints
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.defs.seed import run_commands, seed_commands


def snapshot(tables: TableStore) -> dict[str, pd.DataFrame]:
    out = {}
    for name in schemas.READ_MODELS:
        table = tables.open(name)
        assert table is not None
        frame = table.to_pandas()
        out[name] = frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)
    return out


def seeded(tmp_path: Path, customers: int = 2, orders: int = 2) -> tuple[Settings, TableStore]:
    """A platform whose seed commands were projected in one pass."""
    settings = Settings(env="local", data_dir=tmp_path / "data")
    seed_commands(settings, customers=customers, orders_per_customer=orders)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    try:
        catch_up(StepContext(tables, "a"), bus, max_events=10_000)
    finally:
        bus.close()
    return settings, tables


def small_passes(settings: Settings, tables: TableStore, n: int) -> None:
    """``n`` passes of one command each: one small file per pass and table written."""
    bus = make_event_bus(settings)
    try:
        for i in range(n):
            run_commands(
                settings,
                [{"type": "UpdateCustomer", "customerId": "cust-0", "name": f"Renamed {i}"}],
            )
            catch_up(StepContext(tables, f"b{i}"), bus, max_events=10_000)
    finally:
        bus.close()


def test_maintenance_compacts_and_changes_no_row(tmp_path: Path) -> None:
    settings, tables = seeded(tmp_path)
    small_passes(settings, tables, 3)  # so there is something to compact
    before = snapshot(tables)
    checkpoints = read_checkpoints(tables)
    files_before = {n: len(tables.open(n).file_uris()) for n in schemas.READ_MODELS}  # type: ignore[union-attr]

    reports = maintain_all(tables, retention_hours=0)

    assert {r.table for r in reports} >= set(schemas.READ_MODELS)
    after = snapshot(tables)
    for name in schemas.READ_MODELS:
        pd.testing.assert_frame_equal(before[name], after[name])
    assert read_checkpoints(tables) == checkpoints
    raw = next(r for r in reports if r.table == schemas.RAW_EVENTS)
    assert files_before[schemas.RAW_EVENTS] >= 4  # one append per run, all on one event_date
    assert raw.files_after == 1 and raw.files_compacted == files_before[schemas.RAW_EVENTS]
    # Merges rewrote customers' file three times: vacuum deletes the unreferenced ones.
    assert next(r for r in reports if r.table == schemas.CUSTOMERS).files_vacuumed >= 3


def test_compact_small_files_packs_tables_over_the_threshold_only(tmp_path: Path) -> None:
    settings, tables = seeded(tmp_path)
    small_passes(settings, tables, 4)  # one raw append per pass, all on one event_date
    before = snapshot(tables)
    checkpoints = read_checkpoints(tables)
    files = {n: len(tables.open(n).file_uris()) for n in schemas.READ_MODELS}  # type: ignore[union-attr]
    assert files[schemas.RAW_EVENTS] == 5
    # The threshold: only tables holding at least min_files live files are compacted.
    threshold = files[schemas.RAW_EVENTS]
    assert files[schemas.DAILY_ORDER_METRICS] < threshold

    done = compact_small_files(tables, min_files=threshold)

    compacted = {c.table: c for c in done}
    assert schemas.RAW_EVENTS in compacted
    assert schemas.DAILY_ORDER_METRICS not in compacted
    assert all(files[c.table] >= threshold for c in done)
    raw = compacted[schemas.RAW_EVENTS]
    assert (raw.files_before, raw.files_removed, raw.files_added) == (5, 5, 1)
    assert len(tables.open(schemas.RAW_EVENTS).file_uris()) == 1  # type: ignore[union-attr]
    after = snapshot(tables)
    for name in schemas.READ_MODELS:
        pd.testing.assert_frame_equal(before[name], after[name])
    assert read_checkpoints(tables) == checkpoints
    # Nothing is vacuumed: readers of the versions before the compaction keep their files.
    history = tables.open(schemas.RAW_EVENTS).history(1)  # type: ignore[union-attr]
    assert history[0]["operation"] == "OPTIMIZE"
    assert len(list((tmp_path / "data").rglob("raw_events/**/*.parquet"))) == 6


def test_compaction_in_a_follow_run_leaves_files_of_full_size_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files at the follow target size are not rewritten again: a compaction rewrites the new
    small files, not the whole day."""
    settings, tables = seeded(tmp_path, customers=4, orders=12)
    raw_file = tables.open(schemas.RAW_EVENTS).file_uris()[0]  # type: ignore[union-attr]
    size = Path(raw_file.removeprefix("file://")).stat().st_size
    monkeypatch.setattr(maintenance, "FOLLOW_COMPACT_TARGET_BYTES", size)  # that file is full
    small_passes(settings, tables, 2)

    done = {c.table: c for c in compact_small_files(tables, min_files=3)}

    assert (done[schemas.RAW_EVENTS].files_removed, done[schemas.RAW_EVENTS].files_added) == (2, 1)
    live = tables.open(schemas.RAW_EVENTS).file_uris()  # type: ignore[union-attr]
    assert raw_file in live and len(live) == 2
