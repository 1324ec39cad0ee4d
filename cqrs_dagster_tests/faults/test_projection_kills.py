"""A projection child process SIGKILLed AT EACH named fault point of ``catch_up`` (raw, silver and
gold steps, before and after their commits), twice per point (another seed, and for batched steps
a later batch), then a clean re-run: nothing lost, no duplicate, tables equal to a clean replay.
New commands arrive between the kill and the re-run, as they would in production."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cqrs_dagster_tests.fixtures.sail import SailServer

from .harness import (
    SIGKILLED,
    CommandModel,
    handle,
    local_settings,
    project,
    relay,
    run_child,
    summary,
    verify,
)

BATCHED = [
    "raw.before_dead_letters",
    "raw.before_commit",
    "raw.after_commit",
    "orders.before_dead_letters",
    "orders.after_append",
    "orders.before_merge",
    "orders.after_merge",
    "customers.before_dead_letters",
    "customers.after_append",
    "customers.before_merge",
    "customers.after_merge",
]
ONCE_PER_RUN = [
    "order_summary.before_merge",
    "order_summary.after_merge",
    "daily_order_metrics.before_commit",
    "daily_order_metrics.after_commit",
]
CASES = [(p, 21, 1) for p in BATCHED + ONCE_PER_RUN] + [
    *[(p, 22, 2) for p in BATCHED],
    *[(p, 23, 1) for p in ONCE_PER_RUN],
]


@pytest.mark.parametrize(("point", "seed", "nth"), CASES)
def test_sigkill_at_fault_point_then_clean_rerun(
    tmp_path: Path, point: str, seed: int, nth: int
) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(seed))
    handle(settings, model.batch(15))
    relay(settings)
    project(settings, "earlier", batch=7)  # the killed run starts from committed checkpoints
    handle(settings, model.batch(25))
    relay(settings)
    args = {"point": point, "nth": nth, "batch": 9, "run_id": "killed"}
    assert run_child(settings, "project", args) == SIGKILLED
    handle(settings, model.batch(5))  # traffic goes on while the read side is down
    relay(settings)
    project(settings, "rerun", batch=9)
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    summary(f"projection_kill[{point}-{seed}-{nth}]", faults=1, runs_survived=1, verdict=verdict)


@pytest.mark.parametrize("point", BATCHED + ONCE_PER_RUN)
def test_sigkill_on_the_spark_engine_then_clean_rerun(
    tmp_path: Path, point: str, sail_server: SailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same kill on the Spark engine (Sail): the killed child and the re-run compute with
    Spark (CQRS_PROJECTION_ENGINE=spark), the clean replay they are compared with is DuckDB's."""
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(21))
    handle(settings, model.batch(15))
    relay(settings)
    project(settings, "earlier", batch=7)
    handle(settings, model.batch(25))
    relay(settings)
    monkeypatch.setenv("CQRS_PROJECTION_ENGINE", "spark")
    monkeypatch.setenv("CQRS_SPARK_REMOTE", sail_server.remote)
    args = {"point": point, "nth": 1, "batch": 9, "run_id": "killed"}
    assert run_child(settings, "project", args) == SIGKILLED
    handle(settings, model.batch(5))
    relay(settings)
    project(local_settings(tmp_path / "data"), "rerun", batch=9)
    monkeypatch.delenv("CQRS_PROJECTION_ENGINE")
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
