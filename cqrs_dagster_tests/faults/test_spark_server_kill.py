"""The Spark Connect server (Sail) SIGKILLed in the middle of a projection run (issue 12, item 8).

At a fault point after a commit and before the next Spark call, the test kills the server's
whole process group. The run must fail within seconds (not after the Connect client's ~10
minutes of retries) with ``EngineUnavailable`` naming the server and ``CQRS_SPARK_REMOTE``;
nothing is committed after the server died (every table holds the rows it held at the kill, at
the same Delta version); then a NEW server is started, new commands arrive, the re-run on Spark applies every event
exactly once: the tables equal DuckDB's clean replay of the committed events.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.engine import EngineUnavailable
from cqrs_dagster.projections.engines.spark import SparkEngine, connect
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import ALL_TABLES
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.fixtures.sail import running_sail

from .harness import CommandModel, handle, local_settings, normalized, project, relay, verify

# Each point is followed, in the same run, by a Spark call: the next raw batch's decode (or the
# orders fold), daily_order_metrics' aggregation. (A kill after a silver MERGE is the Dagster
# run's case in defs/test_assets_spark.py.)
POINTS = ["raw.after_commit", "order_summary.after_merge"]


def versions(tables: TableStore) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name in ALL_TABLES:
        table = tables.open(name)
        out[name] = None if table is None else table.version()
    return out


@pytest.mark.parametrize("point", POINTS)
def test_sail_killed_mid_run_fails_it_naming_the_server_then_a_new_server_reruns_exactly_once(
    tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(31))
    handle(settings, model.batch(40))
    relay(settings)
    tables = make_table_store(settings)
    at_kill: dict[str, int | None] = {}
    rows_at_kill: dict[str, list[dict[str, Any]]] = {}
    killed_at: list[float] = []

    with running_sail(tmp_path / "sail-1") as (server, proc):
        engine = SparkEngine(connect(server.remote), server.remote, owned=True)

        def kill_the_server(at: str) -> None:
            if at == point and not at_kill:
                at_kill.update(versions(tables))
                rows_at_kill.update(normalized(tables))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                killed_at.append(time.monotonic())

        bus = make_event_bus(settings)
        try:
            with pytest.raises(EngineUnavailable) as raised:
                catch_up(
                    StepContext(tables, "killed", engine=engine, fault=kill_the_server),
                    bus,
                    max_events=100_000,
                    batch_size=9,
                )
            failed_after = time.monotonic() - killed_at[0]
        finally:
            bus.close()
            engine.close()
    assert at_kill, f"the run never reached {point}"
    message = str(raised.value)
    assert server.remote in message and "CQRS_SPARK_REMOTE" in message, message
    assert failed_after < 20, f"the run failed {failed_after:.1f} s after the kill"
    # Nothing committed once the server was gone: the same rows, and every table that existed
    # at the kill at the same Delta version (a silver step may have created its empty table).
    assert normalized(tables) == rows_at_kill
    now = versions(tables)
    assert {t: now[t] for t, v in at_kill.items() if v is not None} == {
        t: v for t, v in at_kill.items() if v is not None
    }

    handle(settings, model.batch(8))  # traffic goes on while the read side is down
    relay(settings)
    with running_sail(tmp_path / "sail-2") as (restarted, _):
        monkeypatch.setenv("CQRS_PROJECTION_ENGINE", "spark")
        monkeypatch.setenv("CQRS_SPARK_REMOTE", restarted.remote)
        assert project(local_settings(tmp_path / "data"), "rerun", batch=9) > 0
    monkeypatch.delenv("CQRS_PROJECTION_ENGINE")
    verify(settings, tmp_path / "clean").assert_ok()  # DuckDB's clean replay
