"""Write-side crashes with REAL SIGKILLs, each repeated over several seeds and kill positions:
a process killed right after a write-store commit and before any publish (the relay never ran),
a relay killed after a publish and before its mark, and a relay killed between two events of one
aggregate. After each: restart (clients retry their commands by commandId, the relay drains),
projection runs, then the harness invariants (nothing lost, no duplicate, equal to a clean
replay)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cqrs_dagster.wiring import make_write_store

from .harness import (
    SIGKILLED,
    CommandModel,
    bus_redeliveries,
    handle,
    local_settings,
    project,
    relay,
    run_child,
    summary,
    verify,
)


def pending(settings_dir: Path) -> int:
    store = make_write_store(local_settings(settings_dir))
    try:
        return len(store.pending_events(100_000))
    finally:
        store.close()


@pytest.mark.parametrize(("seed", "kill_after"), [(1, 1), (2, 6), (3, 13), (4, 20)])
def test_kill_after_commit_before_publish(tmp_path: Path, seed: int, kill_after: int) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(seed))
    handle(settings, model.batch(12))
    relay(settings)
    project(settings, "before")
    commands = model.batch(24)
    assert run_child(settings, "commands", {"commands": commands, "kill_after": kill_after}) == (
        SIGKILLED
    )
    assert pending(settings.data_dir) > 0  # committed, never published
    handle(settings, commands)  # clients retry: processed ids replay, the rest apply
    relay(settings)
    project(settings, "after")
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    assert pending(settings.data_dir) == 0
    summary(f"kill_after_commit[{seed}-{kill_after}]", faults=1, runs_survived=2, verdict=verdict)


@pytest.mark.parametrize(
    ("seed", "kill_at", "batch"), [(5, 1, 4), (6, 2, 4), (7, 3, 5), (8, 1, 50)]
)
def test_kill_after_publish_before_mark(
    tmp_path: Path, seed: int, kill_at: int, batch: int
) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(seed))
    handle(settings, model.batch(30))
    total = pending(settings.data_dir)
    args = {"mode": "after-publish", "kill_at": kill_at, "batch": batch}
    assert run_child(settings, "relay", args) == SIGKILLED
    project(settings, "sees-published-unmarked")
    assert relay(settings, batch) > 0  # the unmarked batch goes out again
    project(settings, "after-restart")
    redelivered = bus_redeliveries(settings)
    assert redelivered == min(batch, total - batch * (kill_at - 1))  # exactly the unmarked batch
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    summary(
        f"kill_after_publish[{seed}-{kill_at}-{batch}]", faults=1, runs_survived=3,
        verdict=verdict, bus_redeliveries=redelivered,
    )  # fmt: skip


def same_aggregate_positions(settings_dir: Path) -> list[int]:
    """1-based k where pending events k and k+1 belong to one aggregate."""
    store = make_write_store(local_settings(settings_dir))
    try:
        events = store.pending_events(100_000)
    finally:
        store.close()
    return [
        k for k in range(1, len(events)) if events[k - 1].aggregate_id == events[k].aggregate_id
    ]


@pytest.mark.parametrize(("seed", "which"), [(9, 0), (10, 1), (11, 2), (12, -1)])
def test_kill_between_two_events_of_one_aggregate(tmp_path: Path, seed: int, which: int) -> None:
    settings = local_settings(tmp_path / "data")
    model = CommandModel(random.Random(seed))
    commands = model.batch(30)
    for c in commands:  # each order moves twice in a row: runs of one aggregate in the outbox
        handle(settings, [c])
        if c["type"] == "CreateOrder":
            oid = c["orderId"]
            model.orders[oid] = "Paid"
            handle(settings, [{"type": "UpdateOrderStatus", "orderId": oid, "status": "Paid"}])
    positions = same_aggregate_positions(settings.data_dir)
    assert positions
    kill_at = positions[which]
    args = {"mode": "between-events", "kill_at": kill_at, "batch": 8}
    assert run_child(settings, "relay", args) == SIGKILLED
    project(settings, "half-an-aggregate")  # v1 on the bus, v2 not yet
    relay(settings)
    project(settings, "after-restart")
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    summary(
        f"kill_between_events[{seed}-{kill_at}]", faults=1, runs_survived=3, verdict=verdict,
        bus_redeliveries=bus_redeliveries(settings),
    )  # fmt: skip
