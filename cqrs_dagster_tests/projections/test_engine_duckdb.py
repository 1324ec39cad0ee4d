"""The DuckDB projection engine (the default) held to the engine contract: the same tables as
the Python path for the same events (see ``cqrs_dagster_tests/contracts/engine_contract.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
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


SPILL_LIMIT = "96MB"  # under the 600k-row sort's ~300 MB, over what DuckDB needs to spill it


def _silver_tables(root: Path, n: int) -> tuple[Any, Any]:
    """orders (``n`` rows, ids in no order, one customer in ten unknown) and customers as Delta
    tables, written column-wise (fast enough for a sort that spills)."""
    from deltalake import write_deltalake

    from cqrs_dagster.projections.schemas import CUSTOMERS, ORDERS, SCHEMAS
    from cqrs_dagster.projections.tables import TableStore
    from cqrs_dagster_tests.contracts.engine_contract import DAY1, order_row

    tables = TableStore(root=str(root))
    row = order_row("o", "c", "1.00", DAY1)
    columns = {name: [row.get(name)] * n for name in SCHEMAS[ORDERS].names}
    columns["order_id"] = [f"o-{(i * 7919) % n:08d}-{'x' * 60}" for i in range(n)]
    columns["customer_id"] = [f"c-{i % 10}" for i in range(n)]
    write_deltalake(
        tables.ensure(ORDERS),
        pa.table(columns, schema=SCHEMAS[ORDERS]),
        mode="append",
        partition_by=["created_day"],
    )
    names = [{"customer_id": f"c-{i}", "name": f"Customer {i}"} for i in range(9)]
    write_deltalake(
        tables.ensure(CUSTOMERS),
        pa.Table.from_pylist(names, schema=SCHEMAS[CUSTOMERS]),
        mode="append",
    )
    return tables.open(ORDERS), tables.open(CUSTOMERS)


def _reference(orders: Any, customers: Any) -> pa.Table:
    from cqrs_dagster.projections.engines.duckdb.gold import summary_rows

    return summary_rows(orders.to_pyarrow_table(), customers.to_pyarrow_table())


def _fell_back(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without the bound" in r.getMessage()]


@pytest.fixture()
def bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], Path]:
    """Set the bounded database's memory limit (new databases for the test) and return the
    folder it spills to."""
    from cqrs_dagster.projections.engines.duckdb import connection

    spill = tmp_path / "spill"
    monkeypatch.setattr(connection, "_DB", {})
    monkeypatch.setattr(connection, "spill_directory", lambda: str(spill))

    def limit(value: str) -> Path:
        monkeypatch.setattr(connection, "bounded_memory", lambda: value)
        return spill

    return limit


def test_a_whole_order_summary_sort_past_the_bound_spills_to_disk_and_gives_the_same_rows(
    tmp_path: Path, bounded: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The whole build's sort runs on the bounded database: past its limit DuckDB writes sorted
    runs to the spill folder instead of growing the process (without falling back to the
    unbounded database), and the rows are the Arrow reference's, in order."""
    spill = bounded(SPILL_LIMIT)
    orders, customers = _silver_tables(tmp_path / "t", 600_000)
    with caplog.at_level(logging.WARNING):
        stream = DuckDBEngine().order_summary_whole(orders, customers)
        first = stream.read_next_batch()  # the sort is done before the first row
        assert spill.is_dir() and any(spill.iterdir()), "the sort did not spill"
        got = pa.Table.from_batches([first, *stream], schema=stream.schema)
    assert not _fell_back(caplog)
    assert got.equals(_reference(orders, customers))


def test_a_whole_order_summary_that_cannot_start_within_the_bound_is_built_without_it(
    tmp_path: Path, bounded: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A bound DuckDB cannot sort in (it fails before the first row): the build runs on the
    unbounded database instead, says so, and gives the same rows."""
    bounded("1MB")
    orders, customers = _silver_tables(tmp_path / "t", 2_000)
    with caplog.at_level(logging.WARNING):
        got = DuckDBEngine().order_summary_whole(orders, customers).read_all()
    assert got.equals(_reference(orders, customers))
    assert len(_fell_back(caplog)) == 1


class _RunsOutAfterTwoBatches:
    """A bounded-database cursor whose readers fail with ``error`` after two batches, as DuckDB
    does when a merge cannot pin its blocks within the bound (seen at 600k rows under 64 MB)."""

    def __init__(self, con: Any, error: Exception) -> None:
        self._con, self._error = con, error

    def sql(self, query: str, params: Any = None) -> Any:
        relation, error = self._con.sql(query, params=params), self._error

        class Relation:
            def to_arrow_reader(self, rows: int) -> Iterator[pa.RecordBatch]:
                for i, batch in enumerate(relation.to_arrow_reader(rows)):
                    if i == 2:
                        raise error
                    yield batch

        return Relation()

    def close(self) -> None:
        self._con.close()


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(duckdb.OutOfMemoryException("Out of Memory Error: pin"), id="duckdb"),
        pytest.param(OSError("Out of Memory Error: failed to pin block"), id="arrow-stream"),
    ],
)
def test_a_whole_order_summary_out_of_memory_mid_stream_goes_on_after_the_last_row(
    tmp_path: Path,
    bounded: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    """Out of memory after rows were handed over: the stream goes on from the unbounded
    database after the last order_id it gave, so no row is repeated or lost."""
    from cqrs_dagster.projections.engines.duckdb import connection, gold

    bounded("256MB")
    monkeypatch.setattr(gold, "STREAM_BATCH_ROWS", 16)
    monkeypatch.setattr(
        gold, "bounded_duck", lambda: _RunsOutAfterTwoBatches(connection.bounded_duck(), error)
    )
    orders, customers = _silver_tables(tmp_path / "t", 100)
    with caplog.at_level(logging.WARNING):
        got = DuckDBEngine().order_summary_whole(orders, customers).read_all()
    assert got.equals(_reference(orders, customers))
    assert [m for m in _fell_back(caplog) if "after order o-00000031" in m]


def test_a_whole_order_summary_error_other_than_memory_is_raised(
    tmp_path: Path, bounded: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only running out of the bound is retried: any other failure ends the stream (the Delta
    write then commits nothing)."""
    from cqrs_dagster.projections.engines.duckdb import connection, gold

    bounded("256MB")
    monkeypatch.setattr(gold, "STREAM_BATCH_ROWS", 16)
    broken = duckdb.IOException("IO Error: the file went away")
    monkeypatch.setattr(
        gold, "bounded_duck", lambda: _RunsOutAfterTwoBatches(connection.bounded_duck(), broken)
    )
    orders, customers = _silver_tables(tmp_path / "t", 100)
    with pytest.raises(Exception, match="the file went away"):
        DuckDBEngine().order_summary_whole(orders, customers).read_all()


def test_opening_the_bounded_database_removes_spill_folders_of_processes_that_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed mid-spill leaves its folder: the next bounded database opened on the
    machine removes it, and keeps the folders of live processes."""
    import subprocess
    import sys
    import tempfile

    from cqrs_dagster.projections.engines.duckdb import connection

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(connection, "_DB", {})
    child = [sys.executable, "-c", "import os; print(os.getpid())"]
    gone = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
    folders = {pid: tmp_path / f"{connection.SPILL_PREFIX}{pid}" for pid in (gone, os.getppid())}
    for folder in folders.values():
        folder.mkdir()
        (folder / "duckdb_temp_block-1.block").write_bytes(b"x" * 16)
    connection.bounded_duck().close()
    assert not folders[gone].exists()
    assert folders[os.getppid()].exists()


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
