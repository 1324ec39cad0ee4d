"""The outbox relay crashing between Cosmos DB and Event Hubs (local stand-in servers).

A child process relays from Cosmos DB to Event Hubs and is SIGKILLed right after a publish was
accepted by the hub and before the store marked it (and, in the second case, between two events
of one aggregate). A clean relay then finishes: every committed event is on the hub, a duplicate
repeats its eventId byte for byte, first deliveries keep version order per aggregate, nothing
stays pending in Cosmos DB; after projection, raw_events in Blob storage holds each eventId once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import pytest

from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.schemas import RAW_EVENTS
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store, make_write_store
from cqrs_dagster_tests.command.test_relay import assert_delivered, bus_events, seed
from cqrs_dagster_tests.fixtures.procs import ROOT, stop_group

pytestmark = pytest.mark.servers

# Settings come from the CQRS_* environment the child inherits (CQRS_ENV=azure).
_CRASHING_RELAY = """
import sys
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.settings import load_settings
from cqrs_dagster.wiring import make_event_bus, make_write_store
from cqrs_dagster_tests.command.test_relay import SuicidalBus

mode, kill_at, batch = sys.argv[1:]
settings = load_settings()
assert settings.env == "azure"
bus = SuicidalBus(make_event_bus(settings), mode, int(kill_at))
OutboxRelay(make_write_store(settings), bus, batch_size=int(batch)).drain()
sys.exit(3)  # not reached: the bus kills this process first
"""


@pytest.mark.parametrize(
    ("mode", "kill_at", "expected_duplicates"),
    [
        ("after-publish", 2, 4),  # the second batch of 4 was on the hub, not marked
        (
            "between-events",
            7,
            3,
        ),  # events 5..7 of the batch 5..8 went out one by one, then the kill
    ],
)
def test_relay_killed_between_publish_and_mark_loses_and_doubles_nothing(
    azure_settings: Settings, mode: str, kill_at: int, expected_duplicates: int
) -> None:
    settings = azure_settings
    store = make_write_store(settings)
    bus = make_event_bus(settings)
    try:
        seed(store)
        committed = store.pending_events(10_000)
        assert len(committed) == 21

        child = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_RELAY, mode, str(kill_at), "4"],
            cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = child.communicate(timeout=120)
        finally:
            stop_group(child)
        assert child.returncode == -signal.SIGKILL, err.decode()
        left = store.pending_events(10_000)
        assert 0 < len(left) < len(committed)

        assert OutboxRelay(store, bus, batch_size=4).drain() == len(left)
        assert assert_delivered(committed, bus, store) == expected_duplicates
        on_hub = Counter(env.event_id for _, env in bus_events(bus))
        assert sum(on_hub.values()) == len(committed) + expected_duplicates

        tables = make_table_store(settings)
        catch_up(StepContext(tables, f"after-crash-{mode}"), bus, max_events=1_000)
        raw = tables.open(RAW_EVENTS)
        assert raw is not None
        ids = raw.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()
        assert sorted(ids) == sorted(e.event_id for e in committed)
    finally:
        bus.close()
        store.close()
