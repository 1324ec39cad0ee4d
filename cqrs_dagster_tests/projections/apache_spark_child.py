"""Child process of ``test_engine_apache_spark``: the Spark engine on Apache Spark's own engine
(Spark Connect local mode, ``SparkSession.builder.remote("local[2]")``), in a process of its own
so the JVM it starts (~1 GiB) is stopped with it and never lives in the pytest process.

``python -m cqrs_dagster_tests.projections.apache_spark_child <bus.sqlite> <partitions> <out>``:

1. starts Spark Connect local (its gRPC server on 127.0.0.1, an ephemeral port: pyspark's
   testing mode, ``SPARK_TESTING=1``; no UI);
2. runs the whole projection (``catch_up``, batches of :data:`BATCH`) over the bus into Delta
   tables under ``<out>/delta`` (delta-rs commits: Spark only computes, from Arrow inputs, so
   no Delta jars are needed);
3. decodes the engine contract's bodies (all of them, poison included, in one batch) and folds
   its fold cases, written as Arrow IPC files under ``<out>``;
4. stops the session (which stops the local Connect server and its SparkContext), then shuts
   the Py4J gateway and waits for its JVM to exit, and prints a JSON summary (start seconds,
   the JVM's pid) as its last line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.engines.spark import SparkEngine
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import CUSTOMERS, ORDERS, SCHEMAS
from cqrs_dagster.projections.silver import SPECS
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster_tests.contracts.engine_contract import (
    DECODE_CASES,
    current_rows,
    fixed_clock,
    fold_case,
    raw_rows,
)

BATCH = 120  # two batches of the parity stream: new keys, then keys with current rows
REMOTE = "local[2]"


def start() -> Any:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers connect back
    # The local Connect server takes an ephemeral port and the client asks the JVM for it only
    # in pyspark's testing mode; without it the client dials 15002 (another test's server, or
    # nothing: then it retries for minutes).
    os.environ["SPARK_TESTING"] = "1"
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.remote(REMOTE)
        .config("spark.connect.grpc.binding.address", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        # tiny inputs: compiling whole-stage code costs more than it saves (same semantics)
        .config("spark.sql.codegen.wholeStage", "false")
        .getOrCreate()
    )


def stop(session: Any) -> int | None:
    """Stop the session and the local server, then the Py4J gateway's JVM; its pid."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is not None:
        gateway.shutdown()
    if proc is None:
        return None
    if proc.stdin is not None:
        proc.stdin.close()  # the gateway JVM exits when its stdin closes
    try:
        proc.wait(30)
    except Exception:
        proc.kill()
        proc.wait(10)
    return int(proc.pid)


def write(path: Path, table: pa.Table) -> None:
    with ipc.new_file(str(path), table.schema) as out:
        out.write_table(table)


def main(argv: list[str]) -> int:
    bus_path, partitions, out_dir = argv
    out = Path(out_dir)
    started = time.monotonic()
    session = start()
    start_seconds = time.monotonic() - started
    jvm_pid = None
    try:
        engine = SparkEngine(session, REMOTE)
        bus = LocalEventBus(Path(bus_path), partition_count=int(partitions))
        try:
            ctx = StepContext(
                TableStore(str(out / "delta")), "parity", engine=engine, clock=fixed_clock
            )
            catch_up(ctx, bus, max_events=100_000, batch_size=BATCH)
        finally:
            bus.close()
        write(out / "decode.arrow", engine.decode(list(DECODE_CASES.values())))
        for table in (ORDERS, CUSTOMERS):
            seed, batch, _ = fold_case(table)
            folded = engine.fold(table, raw_rows(batch), current_rows(SPECS[table], seed))
            assert folded.rows.schema == SCHEMAS[table]
            write(out / f"fold-{table}.arrow", folded.rows)
    finally:
        jvm_pid = stop(session)
    print(json.dumps({"start_seconds": start_seconds, "jvm_pid": jvm_pid}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
