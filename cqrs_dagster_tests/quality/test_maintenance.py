"""Table maintenance compacts files and leaves every table's rows and checkpoints unchanged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.maintenance import maintain_all
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


def test_maintenance_compacts_and_changes_no_row(tmp_path: Path) -> None:
    settings = Settings(env="local", data_dir=tmp_path / "data")
    seed_commands(settings, customers=2, orders_per_customer=2)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    catch_up(StepContext(tables, "a"), bus, max_events=10_000)
    # A few more small commits so there is something to compact.
    for i in range(3):
        run_commands(
            settings,
            [{"type": "UpdateCustomer", "customerId": "cust-0", "name": f"Renamed {i}"}],
        )
        catch_up(StepContext(tables, f"b{i}"), bus, max_events=10_000)
    bus.close()
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
