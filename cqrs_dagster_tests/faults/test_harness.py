"""The fault tests' oracle is not vacuous: ``verify`` reports an event that never reached
raw_events, a duplicated read-model row, and a row that differs from the clean replay."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from cqrs_dagster.projections.schemas import ORDERS, SCHEMAS
from cqrs_dagster.wiring import make_table_store

from .harness import CommandModel, handle, local_settings, project, relay, table_rows, verify


def test_verify_catches_lost_events_duplicates_and_wrong_rows(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(7))
    handle(settings, model.batch(15))
    relay(settings)
    project(settings)
    assert verify(settings, tmp_path / "clean-0").events_lost == 0

    handle(settings, model.batch(5))  # committed and published, never projected
    relay(settings)
    lost = verify(settings, tmp_path / "clean-1")
    assert lost.events_lost == 5 and lost.differing_tables

    project(settings)
    tables = make_table_store(settings)
    row = table_rows(tables, ORDERS)[0]
    changed = {**row, "status": "Teleported"}
    write_deltalake(
        tables.open(ORDERS),
        pa.Table.from_pylist([changed], schema=SCHEMAS[ORDERS]),
        mode="append",
        partition_by=["created_day"],
    )
    broken = verify(settings, tmp_path / "clean-2")
    assert broken.events_lost == 0
    assert broken.duplicates == 1
    assert ORDERS in broken.differing_tables
