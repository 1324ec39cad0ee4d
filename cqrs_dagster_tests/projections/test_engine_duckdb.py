"""The DuckDB projection engine (the default) held to the engine contract: the same tables as
the Python path for the same events (see ``cqrs_dagster_tests/contracts/engine_contract.py``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cqrs_dagster.projections.engine import ProjectionEngine
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster_tests.contracts.engine_contract import EngineContract


class TestDuckDBEngine(EngineContract):
    def make_engine(self, request: pytest.FixtureRequest) -> ProjectionEngine:
        return DuckDBEngine()


def test_a_whole_order_summary_is_streamed_from_the_files_in_sorted_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB reads the silver tables' Parquet files and hands the sorted rows over batch by
    batch (the first build's memory, issue 14 (f)): several batches, in order across them, and
    the orders table is not read through Arrow."""
    from deltalake import DeltaTable, write_deltalake

    from cqrs_dagster.projections.engines.duckdb import gold
    from cqrs_dagster.projections.schemas import CUSTOMERS, ORDERS, SCHEMAS
    from cqrs_dagster.projections.tables import TableStore
    from cqrs_dagster_tests.contracts.engine_contract import DAY1, order_row

    monkeypatch.setattr(gold, "STREAM_BATCH_ROWS", 16)
    tables = TableStore(root=str(tmp_path))
    orders = [order_row(f"o-{(i * 37) % 100:03d}", "c-1", "1.00", DAY1) for i in range(100)]
    write_deltalake(
        tables.ensure(ORDERS),
        pa.Table.from_pylist(orders, schema=SCHEMAS[ORDERS]),
        mode="append",
        partition_by=["created_day"],
    )
    write_deltalake(
        tables.ensure(CUSTOMERS),
        pa.Table.from_pylist([{"customer_id": "c-1", "name": "Ada"}], schema=SCHEMAS[CUSTOMERS]),
        mode="append",
    )

    def no_arrow_read(*args: object, **kwargs: object) -> pa.Table:
        raise AssertionError("the whole table was read through Arrow")

    monkeypatch.setattr(DeltaTable, "to_pyarrow_table", no_arrow_read)
    order_table, customer_table = tables.open(ORDERS), tables.open(CUSTOMERS)
    assert order_table is not None and customer_table is not None
    batches = list(DuckDBEngine().order_summary_whole(order_table, customer_table))
    assert len(batches) > 1
    ids = [i for b in batches for i in b.column("order_id").to_pylist()]
    assert ids == [f"o-{i:03d}" for i in range(100)]
    assert {n for b in batches for n in b.column("customer_name").to_pylist()} == {"Ada"}


@pytest.mark.parametrize(
    ("pool_env", "expected"), [(None, "jemalloc"), ("mimalloc", "mimalloc"), ("system", "system")]
)
def test_a_projection_process_allocates_arrow_memory_with_jemalloc(
    pool_env: str | None, expected: str
) -> None:
    """The composition root sets the pool when it builds the engine (peak RSS with threads,
    issue 14 (f)); ARROW_DEFAULT_MEMORY_POOL still wins. In a child: the pool is per process."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool_env is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool_env
    code = (
        "import pyarrow as pa\n"
        "from cqrs_dagster.settings import load_settings\n"
        "from cqrs_dagster.wiring import make_engine\n"
        "before = pa.default_memory_pool().backend_name\n"
        "make_engine(load_settings(projection_engine='duckdb')).close()\n"
        "print(before, pa.default_memory_pool().backend_name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == expected
    if pool_env is None:
        assert out[0] == "mimalloc"  # pyarrow's own default here: the call changed it
