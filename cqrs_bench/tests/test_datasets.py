"""The benchmarks' synthetic inputs keep the read models' schemas: a schema change (as when
raw_events.offset became a string) fails here, not in the middle of `make bench`."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from cqrs_bench.datasets import build_orders
from cqrs_bench.read_side import BATCH, merge_batches, write_raw
from cqrs_bench.rebuild import _write_raw as write_rebuild_raw
from cqrs_dagster.projections.schemas import RAW_EVENTS_SCHEMA
from cqrs_dagster.projections.tables import TableStore


def test_read_side_inputs_project_one_full_batch(tmp_path: Path) -> None:
    tables = TableStore(root=str(tmp_path))
    ids = build_orders(tables, 10_000, days=10)
    write_raw(tables, [oid for oid, _ in ids[-BATCH // 2 :]], 1)
    raw = DeltaTable(tables.uri("raw_events"))
    assert raw.schema().to_arrow() == RAW_EVENTS_SCHEMA
    out = merge_batches(str(tmp_path), 1)  # raises unless the step applies all 10k events
    assert len(out["seconds"]) == 1
    orders = DeltaTable(tables.uri("orders")).to_pyarrow_table()
    assert orders.num_rows == 10_000 + BATCH // 2


def test_rebuild_inputs_match_the_raw_events_schema(tmp_path: Path) -> None:
    tables = TableStore(root=str(tmp_path))
    write_rebuild_raw(tables, 50)
    raw = DeltaTable(tables.uri("raw_events")).to_pyarrow_table()
    assert raw.schema == RAW_EVENTS_SCHEMA
    assert raw.num_rows == 50 * 4  # created + three status moves each
    assert set(raw["offset"].to_pylist()) == {str(s) for s in raw["sequence_number"].to_pylist()}
