"""Conformance on Apache Spark's own engine (issue 12, item 4): the Spark engine's SQL run by
Apache Spark 4.3 through Spark Connect local mode (``remote("local[2]")``, the pyspark of the
``spark`` extra with its jars, Java 17), so a Sail quirk cannot hide a Spark incompatibility.

Delta: the Spark engine never reads or writes Delta through Spark (no ``format("delta")``): the
pipeline hands it Arrow batches (``createDataFrame``) and commits its Arrow output with delta-rs,
so Apache Spark runs here without the Delta jars (not installable: no Maven repository).

The child process (:mod:`.apache_spark_child`, its own process group, TZ=Pacific/Kiritimati so
UTC handling does not lean on the machine's zone) projects the parity stream
(:mod:`.test_engine_parity`) and decodes / folds the engine contract's port cases; this test
compares its Delta tables with the DuckDB engine's, exactly (all columns, Arrow types), checks the
decodes and folds against the Python path, and that no process of the child (the JVM above all)
is left once it has stopped its session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.engines import DuckDBEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import ALL_TABLES, CUSTOMERS, ORDERS
from cqrs_dagster.projections.silver import SPECS
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster_tests.contracts.engine_contract import (
    DECODE_CASES,
    NOT_CANONICAL,
    current_rows,
    expected_decode,
    fixed_clock,
    fold_case,
)
from cqrs_dagster_tests.fixtures.procs import ROOT, stop_group, wait_until

from .apache_spark_child import BATCH
from .test_engine_parity import PARTITIONS, first_difference, seeded_bus, sorted_table


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process in process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(entry.name), cmd))
        except (OSError, ValueError):
            continue
    return found


def read_arrow(path: Path) -> pa.Table:
    with ipc.open_file(str(path)) as reader:
        return reader.read_all()


@pytest.fixture(scope="module")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("apache-spark")
    bus = seeded_bus(root)
    bus.close()
    out = root / "out"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",  # the driver and block manager on loopback too
        "TZ": "Pacific/Kiritimati",
        # A short-lived JVM: the C1 JIT only and the serial collector halve its CPU time
        # (measured here: 59 s -> 31 s of CPU, 59 s -> 40 s wall on a loaded machine). The JIT
        # tier does not change what Spark computes.
        "JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
    env.pop("SPARK_REMOTE", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "cqrs_dagster_tests.projections.apache_spark_child",
         str(root / "bus.sqlite"), str(PARTITIONS), str(out)],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = child.communicate(timeout=240)
        left = group_members(child.pid)
        if left:  # give a JVM shutting down a moment, then fail below
            wait_until(lambda: not group_members(child.pid), 10)
            left = group_members(child.pid)
    finally:
        if group_members(child.pid):
            os.killpg(child.pid, signal.SIGKILL)
        stop_group(child)
    assert child.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    duck = TableStore(str(root / "duckdb"))
    bus = LocalEventBus(root / "bus.sqlite", partition_count=PARTITIONS)
    try:
        ctx = StepContext(duck, "parity", engine=DuckDBEngine(), clock=fixed_clock)
        catch_up(ctx, bus, max_events=100_000, batch_size=BATCH)
    finally:
        bus.close()
    yield {"out": out, "summary": summary, "left": left, "duck": duck}


def test_the_child_stopped_spark_and_left_no_process(apache: dict[str, Any]) -> None:
    assert apache["left"] == [], apache["left"]  # no JVM, no Python worker of the child
    pid = apache["summary"]["jvm_pid"]
    assert pid is not None, "the child did not start a JVM"
    assert (
        not Path(f"/proc/{pid}").exists() or "java" not in Path(f"/proc/{pid}/cmdline").read_text()
    )


@pytest.mark.parametrize("name", ALL_TABLES)
def test_apache_spark_gives_duckdbs_tables(apache: dict[str, Any], name: str) -> None:
    spark = sorted_table(TableStore(str(apache["out"] / "delta")), name)
    duck = sorted_table(apache["duck"], name)
    assert spark.schema.equals(duck.schema), f"{spark.schema} != {duck.schema}"
    assert duck.num_rows > 0
    assert spark.equals(duck), first_difference(spark, duck, spark.schema.names[0])


def test_decodes_follow_the_contract(apache: dict[str, Any]) -> None:
    decoded = read_arrow(apache["out"] / "decode.arrow")  # poison in the batch: never raises
    assert decoded.column("i").to_pylist() == list(range(len(DECODE_CASES)))
    rows = dict(zip(DECODE_CASES, decoded.to_pylist(), strict=True))
    assert rows["canonical"]["fast"]
    assert [n for n in NOT_CANONICAL if rows[n]["fast"]] == []
    for name, row in rows.items():
        expected = expected_decode(DECODE_CASES[name])
        if expected is None:
            assert not row["fast"], f"{name}: parse_body rejects it, it must not be fast"
        elif row["fast"]:
            got = {k: v for k, v in row.items() if k not in ("i", "fast")}
            assert got == {k: expected[k] for k in got}, name
    fast = {name for name, row in rows.items() if row["fast"]}
    plain = {
        "canonical",
        "empty data and metadata",
        "null and bool values",
        "nested object in data",
    }
    assert plain <= fast, f"Apache Spark decoded only {sorted(fast)}"
    # what get_json_object would not give back verbatim on Apache Spark: the Python path's
    assert not fast & {"astral and raw unicode", "decimal floats", "large float"}


@pytest.mark.parametrize("table", [ORDERS, CUSTOMERS])
def test_folds_equal_the_python_fold(apache: dict[str, Any], table: str) -> None:
    spec = SPECS[table]
    seed, batch, clean = fold_case(table)
    by_current = {r[spec.key]: r for r in current_rows(spec, seed).to_pylist()}
    python = spec.fold(by_current, batch)
    rows = read_arrow(apache["out"] / f"fold-{table}.arrow").to_pylist()
    assert clean <= {r[spec.key] for r in rows}, "every clean key is folded by the engine"
    for row in rows:
        assert row == python.rows[row[spec.key]], row[spec.key]
