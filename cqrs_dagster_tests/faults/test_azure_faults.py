"""Faults on the Azure path (issue 13 §6), on the local servers, each really SIGKILLed by process
group and started again on the same port with what it had acknowledged (see faults/azure.py):

- Azurite killed during Delta commits of the read models (``az://``): once just before
  raw_events' commit (down ~2 s, the time Azurite takes to start: the commit's storage retries
  ride over it) and once by itself right after it stored a commit file of ``customers`` and
  before answering (the committer never learns that its commit landed; it recognizes it by its
  checkpoints). The run survives both;
- the Cosmos DB server down twice while commands arrive over HTTP: once killing itself right
  after storing a command's write and before answering it, once SIGKILLed by the test while a
  command is in flight. The command API answers 503 problem+json with Retry-After (never 500,
  never an acknowledgement), the relay thread keeps retrying, and the client's retries with the
  same commandId are acknowledged once it is back: the stored command with its original answer
  (200, applied once), the others applied (201);
- the Event Hubs server killed in the middle of a relay round (after the round's first batch
  was accepted) and started again 3 s later, the bus's SDK retries off so the outage outlasts
  them: the round fails, the relay retries it and sends the accepted batch again (at-least-once),
  the hub keeps what it accepted, raw_events drops the copies.

After recovery every acknowledged command is in the read models exactly once: its events are on
the hub and in raw_events once, nothing else is, every aggregate's row is at its last
acknowledged version, and every table equals a clean replay of the committed events.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.eventbus.eventhubs import EventHubsBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import RAW_EVENTS
from cqrs_dagster.settings import Settings
from cqrs_dagster.web.app import build_app
from cqrs_dagster.wiring import make_event_bus, make_table_store, make_write_store
from cqrs_dagster_tests.e2e.azure_env import serve
from cqrs_dagster_tests.fixtures.procs import RestartableServer, wait_until

from .azure import (
    COSMOS_DIES_AFTER_STORING,
    DIE_AFTER_COMMIT_PREFIX,
    Acknowledged,
    AzureStack,
    commands,
    handle_on_cosmos,
    running_azure_stack,
    verify_acknowledged,
)
from .harness import summary

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureStack]:
    with running_azure_stack(tmp_path_factory.mktemp("azure-faults")) as servers:
        yield servers


def relay_all(settings: Settings) -> int:
    store, bus = make_write_store(settings), make_event_bus(settings)
    try:
        return OutboxRelay(store, bus).drain()
    finally:
        store.close()


def project(settings: Settings, run_id: str, **context: Any) -> int:
    """One projection run over the hub into the Delta tables on Azurite; raw events applied."""
    tables = make_table_store(settings)
    result = catch_up(
        StepContext(tables, run_id, **context), make_event_bus(settings), max_events=10_000
    )
    return sum(r.events_applied for r in result.reports if r.table == RAW_EVENTS)


# -- (a) Azurite ---------------------------------------------------------------------------------


def test_azurite_killed_during_delta_commits(stack: AzureStack, tmp_path: Path) -> None:
    # In this container Azurite dies right after storing customers' first data commit file.
    container = f"{DIE_AFTER_COMMIT_PREFIX}{uuid.uuid4().hex[:12]}"
    settings = stack.settings(tmp_path / "data", container)
    acked = Acknowledged()
    handle_on_cosmos(settings, commands(seed=61, count=24, prefix="a-"), acked)
    assert relay_all(settings) == len(acked.event_ids)

    azurite = stack.azurite_process
    kills_before = len(azurite.kills)
    killed_at: list[str] = []

    def fault(point: str) -> None:
        if point == "raw.before_commit" and not killed_at:
            killed_at.append(point)
            azurite.kill()  # the supervisor starts it again (0.3 s + ~1.7 s start-up)

    with azurite.supervised(delay=0.3):
        started = time.monotonic()
        # Both commits retry until Azurite is back; the second one finds its own commit file
        # there (409) and Delta calls it a concurrent transaction: the committer sees its
        # checkpoints in the table and goes on. A commit of the other table that was in flight
        # when Azurite died fails in transport ("Connection reset by peer"): the committer
        # re-reads that table and commits it again if it was not stored (projections/commit.py).
        # No exception: the run survives both kills.
        project(settings, "killed", fault=fault)
        first_run = time.monotonic() - started
        assert wait_until(azurite.alive, 30)
    assert killed_at == ["raw.before_commit"]
    died = stack.azurite_died_marker.read_text()
    assert died == f"{container}/delta/customers/_delta_log/00000000000000000001.json"
    assert len(azurite.kills) - kills_before == 1  # the self-kill is not one of ours
    assert project(settings, "rerun") == 0  # everything was applied by the killed run

    result = verify_acknowledged(settings, acked, tmp_path / "clean")
    result.assert_ok()
    summary("azurite_killed_during_delta_commits", faults=2, runs_survived=1,
            verdict=result.verdict, first_run_ms=int(first_run * 1000))  # fmt: skip


# -- (b) Cosmos DB -------------------------------------------------------------------------------


def test_cosmos_down_during_commands_answers_503_and_loses_nothing(
    stack: AzureStack, tmp_path: Path
) -> None:
    settings = stack.settings(tmp_path / "data")
    cosmos = stack.cosmos_process
    batch = commands(seed=62, count=20, prefix="b-")
    # The server stores this command's document write, then dies before answering it.
    batch[8]["commandId"] = COSMOS_DIES_AFTER_STORING
    acked = Acknowledged()
    final_status: dict[str, int] = {}
    unavailable: list[tuple[float, httpx.Response]] = []
    health: list[httpx.Response] = []
    starts = cosmos.starts

    with serve(build_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        done = threading.Event()  # the test ended (or failed): the controller gives up

        def outages() -> None:
            # 1: the server killed itself after storing command 9's write (answer lost).
            assert cosmos.proc is not None
            if not wait_until(lambda: not cosmos.alive() or done.is_set(), 120, 0.02):
                return
            wait_until(lambda: len(unavailable) >= 1 or done.is_set(), 30, 0.02)
            health.append(client.get("/api/v1/healthz"))
            cosmos.start()
            # 2: SIGKILLed by the test while command 15 is in flight.
            wait_until(lambda: len(acked.bodies) >= 14 or done.is_set(), 60, 0.005)
            if done.is_set():
                return
            seen = len(unavailable)
            cosmos.kill()
            wait_until(lambda: len(unavailable) > seen or done.is_set(), 30, 0.02)
            cosmos.start()

        controller = threading.Thread(target=outages, name="cosmos-outages")
        controller.start()
        try:
            for command in batch:
                while True:  # a client retrying the same command (same commandId) until acked
                    started = time.monotonic()
                    resp = client.post("/api/v1/commands", json=command)
                    if resp.status_code in (200, 201):
                        acked.add(resp.json())
                        final_status[command["commandId"]] = resp.status_code
                        break
                    assert resp.status_code == 503, resp.text
                    unavailable.append((time.monotonic() - started, resp))
                    time.sleep(0.1)
        finally:
            done.set()
            controller.join(60)
        assert not controller.is_alive()

        store = make_write_store(settings)
        try:  # the relay thread went on retrying through the outages
            assert wait_until(lambda: store.pending_events(1) == [], 60, 0.2)
        finally:
            store.close()

    assert stack.cosmos_died_marker.exists() and cosmos.starts == starts + 2
    # Stored before the server died: its retry replays the original answer instead of applying
    # it again; every other command was applied once (201).
    assert final_status.pop(COSMOS_DIES_AFTER_STORING) == 200
    assert set(final_status.values()) == {201} and len(acked.bodies) == len(batch)
    assert len(unavailable) >= 2
    for seconds, resp in unavailable:
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["type"].endswith("/unavailable") and problem["status"] == 503
        assert "same commandId" in problem["detail"]
        assert int(resp.headers["retry-after"]) >= 1
        assert seconds < 15
    assert [h.status_code for h in health] == [503]
    assert "store" in health[0].json()["detail"]

    assert project(settings, "after-outage") == len(acked.event_ids)
    result = verify_acknowledged(settings, acked, tmp_path / "clean")
    result.assert_ok()
    summary("cosmos_down_during_commands", faults=2, runs_survived=1, verdict=result.verdict,
            answered_503=len(unavailable))  # fmt: skip


# -- (c) Event Hubs ------------------------------------------------------------------------------


class HubKilledMidRound(EventHubsBus):
    """The Event Hubs bus whose server is SIGKILLed right after its ``kill_after``-th accepted
    batch (a relay round sends one batch per partition)."""

    def __init__(self, server: RestartableServer, kill_after: int, **options: Any) -> None:
        super().__init__(**options)
        self.server = server
        self.kill_after = kill_after
        self.accepted = 0  # events in accepted batches

    def _send_batch(self, batch: Any) -> None:
        super()._send_batch(batch)
        self.accepted += len(batch)
        if self.sends == self.kill_after:
            self.server.kill()


def test_event_hubs_restarted_during_a_relay_round(stack: AzureStack, tmp_path: Path) -> None:
    settings = stack.settings(tmp_path / "data")
    acked = Acknowledged()
    handle_on_cosmos(settings, commands(seed=63, count=24, prefix="c-"), acked)
    hub = stack.eventhubs_process
    assert settings.eventhub_connection_string is not None
    bus = HubKilledMidRound(
        hub,
        kill_after=3,  # the first batch of the second round
        connection_string=settings.eventhub_connection_string.get_secret_value(),
        eventhub_name=settings.eventhub_name,
        # The SDK's own retries (3, from 0.8 s) ride over a restart of a second or two within
        # the round; without them the 3 s outage fails the round and the relay retries it.
        retry_total=0,
    )
    store = make_write_store(settings)
    stop = threading.Event()
    relay = OutboxRelay(store, bus, batch_size=8)
    thread = threading.Thread(target=relay.run_forever, args=(stop, 0.05), name="relay")
    starts = hub.starts
    try:
        with hub.supervised(delay=3.0):
            thread.start()
            assert wait_until(lambda: store.pending_events(1) == [], 90, 0.2)
            stop.set()
            thread.join(30)
        assert hub.alive()
    finally:
        stop.set()
        bus.close()
        store.close()
    assert hub.starts == starts + 1
    assert bus.accepted > len(acked.event_ids)  # the failed round's first batch went out twice

    assert project(settings, "after-restart") == len(acked.event_ids)
    result = verify_acknowledged(settings, acked, tmp_path / "clean")
    result.assert_ok()
    assert result.redeliveries == bus.accepted - len(acked.event_ids)
    summary("event_hubs_restarted_during_relay_round", faults=1, runs_survived=1,
            verdict=result.verdict, redeliveries=result.redeliveries)  # fmt: skip
