"""Randomized soak (seeded, a fixed number of steps, bounded well under 60 s): commands, relay runs,
projection runs, SIGKILLs of child processes (a command writer after a commit, a relay after a
publish or between two events, a projection at a random fault point), bus redeliveries and
restarts (every step opens the stores afresh), in an order drawn from the seed. Clients retry the
commands of a killed writer by commandId. At the end: recovery, then the harness invariants."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.wiring import make_write_store

from .harness import (
    SIGKILLED,
    CommandModel,
    bus_redeliveries,
    committed_events,
    handle,
    local_settings,
    project,
    relay,
    republish,
    run_child,
    summary,
    verify,
)
from .test_projection_kills import BATCHED, ONCE_PER_RUN

STEPS = 50
SAFETY_STOP_SECONDS = 45.0  # a loaded machine stops drawing steps early; the checks still run
ACTIONS = [
    ("commands", 5),
    ("commands_killed", 2),
    ("relay", 4),
    ("relay_killed", 2),
    ("project", 4),
    ("project_killed", 2),
    ("redeliver", 1),
    ("retry", 1),
]


def pending_count(settings: Any) -> int:
    store = make_write_store(settings)
    try:
        return len(store.pending_events(100_000))
    finally:
        store.close()


@pytest.mark.parametrize("seed", [1001, 1002, 1003])
def test_soak(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    settings = local_settings(tmp_path / "data")
    model = CommandModel(rng, prefix=f"s{seed}-")
    retry: list[dict[str, Any]] = []
    kills = redeliveries = survived = steps = 0
    names, weights = zip(*ACTIONS, strict=True)
    handle(settings, model.batch(6))
    while steps < STEPS and time.monotonic() - started < SAFETY_STOP_SECONDS:
        steps += 1
        action = rng.choices(names, weights)[0]
        if action == "commands":
            handle(settings, model.batch(rng.randint(1, 6)))
        elif action == "commands_killed":
            commands = model.batch(rng.randint(3, 8))
            args = {"commands": commands, "kill_after": rng.randint(1, 3)}
            kills += run_child(settings, "commands", args) == SIGKILLED
            retry.extend(commands)
        elif action == "relay":
            relay(settings, rng.choice([1, 3, 500]))
            survived += kills > 0
        elif action == "relay_killed" and pending_count(settings) >= 2:
            mode = rng.choice(["after-publish", "between-events"])
            args = {"mode": mode, "kill_at": rng.randint(1, 2), "batch": rng.choice([1, 2, 4])}
            kills += run_child(settings, "relay", args) == SIGKILLED
        elif action == "project":
            project(settings, f"soak-{steps}", batch=rng.randint(3, 30))
            survived += kills > 0
        elif action == "project_killed":
            point = rng.choice(BATCHED + ONCE_PER_RUN)
            args = {"point": point, "nth": rng.randint(1, 2), "batch": rng.randint(3, 15)}
            kills += run_child(settings, "project", args) == SIGKILLED
        elif action == "redeliver":
            store = make_write_store(settings)
            try:  # events published so far (not pending) = committed minus pending
                pending = {e.event_id for e in store.pending_events(100_000)}
            finally:
                store.close()
            published = [e for e in committed_events(settings) if e.event_id not in pending]
            if published:
                start = rng.randrange(len(published))
                republish(settings, published[start : start + rng.randint(1, 8)])
                redeliveries += 1
        elif action == "retry":
            handle(settings, retry)
    handle(settings, retry)  # recovery: clients retry, the relay drains, a clean projection run
    relay(settings)
    project(settings, "recovery")
    verdict = verify(settings, tmp_path / "clean")
    verdict.assert_ok()
    assert kills > 0
    summary(
        f"soak[{seed}]", faults=kills + redeliveries, runs_survived=survived + 1, verdict=verdict,
        kills=kills, redeliveries=redeliveries, steps=steps,
        bus_redeliveries=bus_redeliveries(settings),
    )  # fmt: skip
