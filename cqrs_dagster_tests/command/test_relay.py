"""The outbox relay on a real SQLite write store and the local bus: everything committed reaches
the bus in version order per aggregate; a failed publish marks nothing; the loop survives errors.
Crash tests kill a real relay process with SIGKILL after a publish and before its mark, and between
two events of one aggregate, then run a clean relay: nothing is lost, duplicates carry the same
eventId and body, first deliveries stay in version order, nothing is left pending.
Also ``cqrs relay`` as a subprocess: ``--once``, SIGTERM, and a clear error on a bad bus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.port import WriteStore
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.domain.commands import parse_command
from cqrs_dagster.domain.events import EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent, PartitionInfo, ReceivedEvent
from cqrs_dagster_tests.contracts.eventbus_contract import read_all
from cqrs_dagster_tests.fixtures.procs import ROOT, start_group, stop_group, wait_until

CQRS = Path(sys.executable).parent / "cqrs"


class WrappedBus(EventBus):
    """Delegates to a real bus; subclasses inject failures at a chosen publish."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner
        self.sends = 0

    @property
    def partition_count(self) -> int:
        return self.inner.partition_count

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        self.sends += 1
        self.inner.send(events)

    def read(self, partition: int, after_sequence_number: int, max_count: int) -> list[Any]:
        return self.inner.read(partition, after_sequence_number, max_count)

    def partition_info(self, partition: int) -> PartitionInfo:
        return self.inner.partition_info(partition)

    def close(self) -> None:
        self.inner.close()


class FlakyBus(WrappedBus):
    """Fails its first ``failures`` sends without sending anything."""

    def __init__(self, inner: EventBus, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("bus unavailable")
        super().send(events)


class SuicidalBus(WrappedBus):
    """SIGKILLs its own process: after the ``kill_at``-th send (``after-publish``), or, sending
    one event at a time, after the ``kill_at``-th event (``between-events``)."""

    def __init__(self, inner: EventBus, mode: str, kill_at: int) -> None:
        super().__init__(inner)
        self.mode = mode
        self.kill_at = kill_at
        self.sent_events = 0

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        if self.mode == "after-publish":
            super().send(events)
            if self.sends == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return
        for event in events:
            super().send([event])
            self.sent_events += 1
            if self.sent_events == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)


_CRASHING_RELAY = """
import sys
from pathlib import Path
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster_tests.command.test_relay import SuicidalBus

write, bus, mode, kill_at, batch = sys.argv[1:]
bus = SuicidalBus(LocalEventBus(Path(bus)), mode, int(kill_at))
OutboxRelay(SqliteWriteStore(Path(write)), bus, batch_size=int(batch)).drain()
sys.exit(3)  # not reached: the bus kills this process first
"""


def _run(handler: CommandHandler, **command: Any) -> list[str]:
    result = handler.handle(parse_command(command))
    event_ids: list[str] = result.body["eventIds"]
    return event_ids


def seed(store: WriteStore, prefix: str = "") -> list[str]:
    """Commands giving interleaved aggregates AND runs of one aggregate; the new event ids."""
    h = CommandHandler(store)
    ids: list[str] = []
    item = {"sku": "sku-1", "quantity": 2, "unitPrice": "9.99"}
    for c in ("c1", "c2"):
        ids += _run(
            h, type="RegisterCustomer", customerId=f"{prefix}{c}", name=c, email=f"{c}@x.io"
        )
    for i in range(6):
        ids += _run(
            h, type="CreateOrder", orderId=f"{prefix}o{i}", customerId=f"{prefix}c{i % 2 + 1}",
            items=[item],
        )  # fmt: skip
    for i in range(6):
        ids += _run(h, type="UpdateOrderStatus", orderId=f"{prefix}o{i}", status="Paid")
    for i in range(3):
        for status in ("Shipped", "Delivered"):
            ids += _run(h, type="UpdateOrderStatus", orderId=f"{prefix}o{i}", status=status)
    ids += _run(h, type="UpdateCustomer", customerId=f"{prefix}c1", name="renamed")
    return ids


def bus_events(bus: EventBus) -> list[tuple[ReceivedEvent, EventEnvelope]]:
    return [
        (e, EventEnvelope.from_json(e.body))
        for p in range(bus.partition_count)
        for e in read_all(bus, p)
    ]


def assert_delivered(committed: list[EventEnvelope], bus: EventBus, store: WriteStore) -> int:
    """Every committed event is on the bus; duplicates repeat one eventId byte for byte; the first
    delivery of each aggregate's events runs in version order. Returns the number of duplicates."""
    on_bus = bus_events(bus)
    first_body: dict[str, bytes] = {}
    first_order: dict[str, list[int]] = defaultdict(list)
    for received, envelope in on_bus:
        assert received.partition_key == envelope.aggregate_id
        if envelope.event_id in first_body:
            assert received.body == first_body[envelope.event_id]
            continue
        first_body[envelope.event_id] = received.body
        first_order[envelope.aggregate_id].append(envelope.version)
    assert set(first_body) == {e.event_id for e in committed}
    expected: dict[str, list[int]] = defaultdict(list)
    for e in committed:
        expected[e.aggregate_id].append(e.version)
    assert dict(first_order) == dict(expected)
    assert all(v == list(range(1, len(v) + 1)) for v in expected.values())
    assert store.pending_events(10_000) == []
    return len(on_bus) - len(first_body)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteWriteStore]:
    s = SqliteWriteStore(tmp_path / "write.sqlite")
    yield s
    s.close()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalEventBus]:
    b = LocalEventBus(tmp_path / "bus.sqlite", partition_count=4)
    yield b
    b.close()


def test_relay_publishes_everything_in_version_order(
    store: SqliteWriteStore, bus: LocalEventBus
) -> None:
    event_ids = seed(store)
    committed = store.pending_events(10_000)
    assert [e.event_id for e in committed] == event_ids
    relay = OutboxRelay(store, bus, batch_size=4)
    counts = [relay.run_once() for _ in range(7)]
    assert counts == [4, 4, 4, 4, 4, 1, 0]
    assert assert_delivered(committed, bus, store) == 0
    assert len(bus_events(bus)) == len(event_ids)


def test_events_committed_later_follow_on_the_next_round(
    store: SqliteWriteStore, bus: LocalEventBus
) -> None:
    relay = OutboxRelay(store, bus)
    first = seed(store, "a-")
    assert relay.drain() == len(first)
    second = seed(store, "b-")
    assert relay.drain() == len(second)
    assert {env.event_id for _, env in bus_events(bus)} == set(first + second)


def test_failed_publish_marks_nothing_and_is_retried(
    store: SqliteWriteStore, bus: LocalEventBus
) -> None:
    seed(store)
    committed = store.pending_events(10_000)
    relay = OutboxRelay(store, FlakyBus(bus, failures=1), batch_size=100)
    with pytest.raises(ConnectionError):
        relay.run_once()
    assert store.pending_events(10_000) == committed
    assert all(i.last_sequence_number == -1 for i in bus.partitions_info())
    assert relay.run_once() == len(committed)
    assert assert_delivered(committed, bus, store) == 0


def test_run_forever_survives_errors_and_stops_on_request(
    store: SqliteWriteStore, bus: LocalEventBus
) -> None:
    seed(store)
    committed = store.pending_events(10_000)
    relay = OutboxRelay(store, FlakyBus(bus, failures=2), batch_size=5, max_backoff=0.05)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.01), daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: not store.pending_events(1), timeout=30)
        more = seed(store, "late-")  # committed while the relay is idling
        assert wait_until(lambda: not store.pending_events(1), timeout=30)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert relay.published_total == len(committed) + len(more)
    assert {env.event_id for _, env in bus_events(bus)} == {e.event_id for e in committed} | set(
        more
    )


def _crash_then_recover(tmp_path: Path, mode: str, kill_at: int, batch_size: int) -> int:
    write_path, bus_path = tmp_path / "write.sqlite", tmp_path / "bus.sqlite"
    store = SqliteWriteStore(write_path)
    seed(store)
    committed = store.pending_events(10_000)
    LocalEventBus(bus_path).close()
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_RELAY, str(write_path), str(bus_path), mode,
         str(kill_at), str(batch_size)],
        cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = child.communicate(timeout=120)
    finally:
        stop_group(child)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert 0 < len(store.pending_events(10_000)) <= len(committed)

    bus = LocalEventBus(bus_path)
    try:
        assert OutboxRelay(store, bus, batch_size=batch_size).drain() > 0
        duplicates = assert_delivered(committed, bus, store)
    finally:
        bus.close()
        store.close()
    return duplicates


@pytest.mark.parametrize("kill_at", [1, 2, 3, 5])
def test_crash_after_publish_before_mark_republishes_same_event_ids(
    tmp_path: Path, kill_at: int
) -> None:
    duplicates = _crash_then_recover(tmp_path, "after-publish", kill_at, batch_size=4)
    assert duplicates == 4  # exactly the batch whose mark the crash prevented


def _runs_of_one_aggregate(tmp_path: Path) -> list[int]:
    """1-based positions k in the outbox where events k and k+1 belong to one aggregate."""
    probe = SqliteWriteStore(tmp_path / "probe.sqlite")
    try:
        seed(probe)
        pending = probe.pending_events(10_000)
    finally:
        probe.close()
    return [
        k for k in range(1, len(pending)) if pending[k - 1].aggregate_id == pending[k].aggregate_id
    ]


@pytest.mark.parametrize(("which", "batch_size"), [(0, 6), (1, 6), (2, 6), (0, 4), (2, 4)])
def test_crash_between_two_events_of_one_aggregate_loses_nothing(
    tmp_path: Path, which: int, batch_size: int
) -> None:
    boundaries = _runs_of_one_aggregate(tmp_path)
    assert len(boundaries) == 3  # o0, o1, o2: Shipped then Delivered
    kill_at = boundaries[which]
    duplicates = _crash_then_recover(tmp_path, "between-events", kill_at, batch_size)
    # the events of the interrupted batch sent before the kill go out again
    assert duplicates == (kill_at - 1) % batch_size + 1


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQRS_")}
    return {**env, **extra}


def test_cli_relay_once_publishes_pending_and_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteWriteStore(data / "write.sqlite")
    event_ids = seed(store)
    store.close()
    for expected in (len(event_ids), 0):
        out = subprocess.run(
            [str(CQRS), "relay", "--data-dir", str(data), "--once"],
            capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"published {expected} events"
    bus = LocalEventBus(data / "bus.sqlite")
    store = SqliteWriteStore(data / "write.sqlite")
    try:
        assert sorted(env.event_id for _, env in bus_events(bus)) == sorted(event_ids)
        assert store.pending_events(10) == []
    finally:
        bus.close()
        store.close()


def test_cli_relay_runs_until_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteWriteStore(data / "write.sqlite")
    proc = start_group(
        [str(CQRS), "relay", "--data-dir", str(data)],
        tmp_path / "relay.log",
        env={"CQRS_RELAY_INTERVAL_SECONDS": "0.05"},
    )
    try:
        event_ids = seed(store)  # committed while the relay runs
        assert wait_until(lambda: not store.pending_events(1), timeout=60)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_group(proc)
        store.close()
    log = (tmp_path / "relay.log").read_text()
    assert f"stopped after publishing {len(event_ids)} events" in log
    bus = LocalEventBus(data / "bus.sqlite")
    try:
        assert sorted(env.event_id for _, env in bus_events(bus)) == sorted(event_ids)
    finally:
        bus.close()


def test_cli_relay_reports_a_partition_count_mismatch_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    LocalEventBus(data / "bus.sqlite", partition_count=8).close()
    out = subprocess.run(
        [str(CQRS), "relay", "--data-dir", str(data), "--once"],
        capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "has 8 partitions, but 4 were requested" in lines[0]


class RecordingStop(threading.Event):
    """A stop event that records how long the relay waits, and stops it after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(-1.0 if timeout is None else timeout)
        if len(self.waits) >= self.rounds:
            self.set()
        return self.is_set()


def test_run_forever_lingers_after_a_partial_batch_only(
    store: SqliteWriteStore, bus: LocalEventBus
) -> None:
    seed(store)
    pending = len(store.pending_events(10_000))
    relay = OutboxRelay(store, bus, batch_size=pending - 1, linger=0.005)
    stop = RecordingStop(rounds=2)
    relay.run_forever(stop, 0.5)
    # Round 1: a full batch, straight on; round 2: the 1 event left, linger; round 3: idle.
    assert stop.waits == [0.005, 0.5]
    assert relay.published_total == pending


def test_the_relay_the_platform_runs_lingers_as_configured(tmp_path: Path) -> None:
    """``CQRS_RELAY_LINGER_SECONDS`` reaches the relay that ``cqrs api`` / ``cqrs relay`` run,
    and is the wait after a partial batch (not after a full one, nor when idle)."""
    from cqrs_dagster.settings import Settings
    from cqrs_dagster.wiring import CommandSide

    assert Settings().relay_linger_seconds == 0.01
    side = CommandSide(Settings(env="local", data_dir=tmp_path, relay_linger_seconds=0.04))
    try:
        relay = side.relay()
        assert relay.linger == 0.04
        for i in range(3):
            _run(
                side.handler,
                type="RegisterCustomer",
                customerId=f"c{i}",
                name="n",
                email=f"c{i}@x.io",
            )
        stop = RecordingStop(rounds=2)
        relay.run_forever(stop, 0.5)
        assert stop.waits == [0.04, 0.5] and relay.published_total == 3
    finally:
        side.close()


# -- the relay on Event Hubs (the local AMQP test server) -----------------------------------------


@pytest.mark.servers
def test_relay_round_of_many_aggregates_is_a_few_sends_on_event_hubs(
    store: SqliteWriteStore, eventhubs_server: Any
) -> None:
    """500 aggregates in one round: one batch per partition (4), not one per aggregate; every
    event arrives once, keyed by its aggregate, in version order per aggregate."""
    from cqrs_dagster.eventbus.eventhubs import EventHubsBus

    h = CommandHandler(store)
    for i in range(500):
        _run(h, type="RegisterCustomer", customerId=f"c{i}", name="n", email=f"c{i}@x.io")
    for i in range(0, 500, 5):  # some aggregates with several events in the round
        _run(h, type="UpdateCustomer", customerId=f"c{i}", name="renamed")
    committed = store.pending_events(10_000)
    bus = EventHubsBus(
        connection_string=eventhubs_server.connection_string,
        eventhub_name=eventhubs_server.new_hub_name(),
    )
    try:
        relay = OutboxRelay(store, bus, batch_size=1_000)
        assert relay.run_once() == len(committed) == 600
        assert bus.sends <= bus.partition_count  # 600 small events fit one batch per partition
        assert assert_delivered(committed, bus, store) == 0
        for received, envelope in bus_events(bus):
            assert received.partition == bus.partition_of(envelope.aggregate_id)
            assert isinstance(received.offset, str)
    finally:
        bus.close()


@pytest.mark.servers
def test_failed_event_hubs_send_marks_nothing_published(
    store: SqliteWriteStore, eventhubs_server: Any
) -> None:
    """The second partition's batch fails: send raises, the relay marks nothing, and the next
    round re-sends everything (the first partition's events arrive twice, same eventId)."""
    from cqrs_dagster.eventbus.eventhubs import EventHubsBus

    committed = [
        e for eid in seed(store) for e in store.pending_events(10_000) if e.event_id == eid
    ]
    bus = EventHubsBus(
        connection_string=eventhubs_server.connection_string,
        eventhub_name=eventhubs_server.new_hub_name(),
    )
    real_send = bus._send_batch
    calls = {"n": 0}

    def flaky(batch: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("link lost")
        real_send(batch)

    try:
        bus._send_batch = flaky  # type: ignore[method-assign]
        relay = OutboxRelay(store, bus, batch_size=1_000)
        with pytest.raises(ConnectionError):
            relay.run_once()
        assert len(store.pending_events(10_000)) == len(committed)  # nothing marked
        assert relay.run_once() == len(committed)
        assert assert_delivered(committed, bus, store) > 0  # at-least-once: duplicates, no loss
    finally:
        bus.close()
