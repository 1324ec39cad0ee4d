"""CosmosWriteStore against the local Cosmos DB server (npm cosmosdb-server), a fresh database each.

Covers: the whole WriteStore contract; the document layout that makes a save atomic (state,
pending events and command ids in ONE document); a concurrent writer holding a stale etag getting
VersionConflict, and a raced retry getting DuplicateCommand; mark_published surviving a command
that changed the document in between; missing settings naming the setting; and the outbox relay
crashing (SIGKILL) after publishing and before marking, after which every event reaches the bus
with the same eventIds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos.exceptions import CosmosAccessConditionFailedError

from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.cosmos import (
    INDEXING_POLICY,
    CosmosWriteStore,
    NotProvisioned,
    provision,
)
from cqrs_dagster.command.writestore.port import Save, StoredAggregate, WriteStore
from cqrs_dagster.domain.errors import DuplicateCommand, VersionConflict
from cqrs_dagster.domain.events import ORDER, EventEnvelope
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.settings import Settings, SettingsError
from cqrs_dagster.wiring import make_cosmos_write_store, provision_cosmos
from cqrs_dagster_tests.contracts.writestore_contract import (
    WriteStoreContract,
    commit,
    make_event,
)
from cqrs_dagster_tests.fixtures.cosmos import CosmosServer
from cqrs_dagster_tests.fixtures.procs import ROOT, wait_until

pytestmark = pytest.mark.servers


def fresh_store(server: CosmosServer, **options: Any) -> CosmosWriteStore:
    client = server.client()
    database = server.fresh_database_name()
    provision(client, database)
    return CosmosWriteStore(client, database, **options)


class TestCosmosWriteStore(WriteStoreContract):
    def make_store(self, request: pytest.FixtureRequest) -> WriteStore:
        return fresh_store(request.getfixturevalue("cosmos_server"))


@pytest.fixture
def cosmos(cosmos_server: CosmosServer) -> Iterator[CosmosWriteStore]:
    store = fresh_store(cosmos_server)
    yield store
    store.close()


def raw_doc(store: CosmosWriteStore, aggregate_id: str) -> dict[str, object]:
    doc = store._read(ORDER, aggregate_id)
    assert doc is not None
    return doc


def test_one_document_holds_state_pending_events_and_command(cosmos: CosmosWriteStore) -> None:
    events = commit(cosmos, "o1", 0, n_events=2, command_id="c1")
    doc = raw_doc(cosmos, "o1")
    assert doc["version"] == 2
    assert doc["state"] == {"id": "o1", "v": 2}
    assert doc["commandIds"] == ["c1"]
    assert [p["event"]["eventId"] for p in doc["pending"]] == [e.event_id for e in events]  # type: ignore[attr-defined]
    cosmos.mark_published(events)
    doc = raw_doc(cosmos, "o1")
    assert doc["pending"] == [] and doc["pendingCount"] == 0 and doc["pendingSince"] is None


def race(store: CosmosWriteStore, command_ids: list[str]) -> list[str]:
    """Every writer saves version 2 on top of version 1 at once; what each one got."""
    barrier = threading.Barrier(len(command_ids))

    def one(command_id: str) -> str:
        barrier.wait()
        try:
            commit(store, "o1", 1, command_id=command_id)
        except VersionConflict:
            return "conflict"
        except DuplicateCommand:
            return "duplicate"
        return "ok"

    with ThreadPoolExecutor(len(command_ids)) as pool:
        return list(pool.map(one, command_ids))


def test_concurrent_writers_one_wins_the_others_conflict(cosmos: CosmosWriteStore) -> None:
    commit(cosmos, "o1", 0)
    outcomes = race(cosmos, [f"c{i}" for i in range(6)])
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]
    stored = cosmos.load(ORDER, "o1")
    assert stored is not None and stored.version == 2
    assert [e.version for e in cosmos.pending_events(10)] == [1, 2]


def test_concurrent_retries_of_one_command_one_wins_the_others_are_duplicates(
    cosmos: CosmosWriteStore,
) -> None:
    commit(cosmos, "o1", 0)
    outcomes = race(cosmos, ["same"] * 6)
    assert sorted(outcomes) == ["duplicate"] * 5 + ["ok"]
    assert [e.version for e in cosmos.pending_events(10)] == [1, 2]


def test_lost_race_is_a_version_conflict_or_a_duplicate(cosmos: CosmosWriteStore) -> None:
    commit(cosmos, "o1", 0, command_id="c1")
    stale_etag = raw_doc(cosmos, "o1")["_etag"]
    commit(cosmos, "o1", 1, command_id="c2")
    # Replaying the write of a writer that read the document before c2 committed:
    doc = raw_doc(cosmos, "o1") | {"version": 99}
    with pytest.raises(CosmosAccessConditionFailedError):
        cosmos._write(ORDER, doc, str(stale_etag))
    stored = cosmos.load(ORDER, "o1")
    assert stored is not None and stored.version == 2
    with pytest.raises(VersionConflict):
        commit(cosmos, "o1", 1, command_id="c3")
    with pytest.raises(DuplicateCommand):
        commit(cosmos, "o1", 1, command_id="c2")


def test_a_relay_mark_between_a_saves_read_and_write_is_not_a_conflict(
    cosmos: CosmosWriteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking events published rewrites the document (new etag, same version): a command saved
    concurrently writes again on the new etag instead of answering 409 (issue 13 §6: seen while
    the relay caught up after a Cosmos DB outage)."""
    first = commit(cosmos, "o1", 0, command_id="c1")
    write = cosmos._write
    marked: list[bool] = []

    def relay_marks_first(aggregate_type: str, doc: dict[str, Any], etag: str | None) -> None:
        if not marked:
            marked.append(True)
            cosmos.mark_published(first)  # the relay, between this save's read and its write
        write(aggregate_type, doc, etag)

    monkeypatch.setattr(cosmos, "_write", relay_marks_first)
    second = commit(cosmos, "o1", 1, command_id="c2")
    doc = raw_doc(cosmos, "o1")
    assert marked and doc["version"] == 2 and doc["commandIds"] == ["c1", "c2"]
    pending = [p["event"]["eventId"] for p in doc["pending"]]  # type: ignore[attr-defined]
    assert pending == [e.event_id for e in second]  # the marked events stay marked


def test_mark_published_retries_when_a_command_changed_the_document(
    cosmos: CosmosWriteStore,
) -> None:
    first = commit(cosmos, "o1", 0)
    pending = cosmos.pending_events(10)
    later = commit(cosmos, "o1", 1)  # lands between the relay's read and its mark
    cosmos.mark_published(pending)
    assert cosmos.pending_events(10) == list(later)
    assert first[0].event_id not in {e.event_id for e in cosmos.pending_events(10)}


def test_save_with_unknown_aggregate_type_is_rejected(cosmos: CosmosWriteStore) -> None:
    with pytest.raises(ValueError, match="unknown aggregate type"):
        cosmos.save(Save(StoredAggregate("Invoice", "i1", 1, {}), 0, (), "c1", {}))


def test_from_settings_names_the_missing_setting() -> None:
    with pytest.raises(SettingsError, match="CQRS_COSMOS_ENDPOINT"):
        make_cosmos_write_store(Settings(env="azure"))


def test_from_settings_connects(cosmos_server: CosmosServer) -> None:
    settings = Settings(
        env="azure",
        cosmos_endpoint=cosmos_server.endpoint,
        cosmos_key=cosmos_server.key,  # type: ignore[arg-type]
        cosmos_database=cosmos_server.fresh_database_name(),
    )
    provision_cosmos(settings)
    store = make_cosmos_write_store(settings)
    try:
        commit(store, "o1", 0, command_id="c1")
        assert store.command_result("c1") == {"aggregateId": "o1", "version": 1}
    finally:
        store.close()


# -- outbox relay crash --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from azure.cosmos import CosmosClient
    from cqrs_dagster.command.relay import OutboxRelay
    from cqrs_dagster.command.writestore.cosmos import CosmosWriteStore
    from cqrs_dagster.eventbus.local import LocalEventBus

    endpoint, key, database, bus_path, flag = sys.argv[1:6]

    class StallAfterSend(LocalEventBus):
        def send(self, events):
            super().send(events)  # durably on the bus ...
            Path(flag).write_text(str(len(events)))
            time.sleep(3600)  # ... and killed here, before mark_published

    client = CosmosClient(endpoint, credential=key, enable_endpoint_discovery=False)
    store = CosmosWriteStore(client, database)
    OutboxRelay(store, StallAfterSend(Path(bus_path), partition_count=2), batch_size=4).run_once()
    """
)


def all_bus_events(bus: LocalEventBus) -> list[EventEnvelope]:
    out: list[EventEnvelope] = []
    for p in range(bus.partition_count):
        out.extend(EventEnvelope.from_json(r.body) for r in bus.read(p, -1, 10_000))
    return out


def test_relay_killed_after_publish_before_mark_loses_nothing(
    cosmos_server: CosmosServer, tmp_path: Path
) -> None:
    database = cosmos_server.fresh_database_name()
    provision(cosmos_server.client(), database)
    store = CosmosWriteStore(cosmos_server.client(), database)
    committed = [
        *commit(store, "o1", 0, n_events=3),
        *commit(store, "o2", 0, n_events=2),
        *commit(store, "o1", 3),
    ]
    bus_path, flag = tmp_path / "bus.sqlite", tmp_path / "sent"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            cosmos_server.endpoint,
            cosmos_server.key,
            database,
            str(bus_path),
            str(flag),
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert wait_until(flag.exists, timeout=60), "the child relay never published"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        first_batch = committed[:4]
        # Killed before marking: the batch is still pending.
        assert [e.event_id for e in store.pending_events(4)] == [e.event_id for e in first_batch]

        bus = LocalEventBus(bus_path, partition_count=2)
        try:
            OutboxRelay(store, bus, batch_size=4).drain()
            assert store.pending_events(100) == []
            on_bus = all_bus_events(bus)
        finally:
            bus.close()
        assert {e.event_id for e in on_bus} == {e.event_id for e in committed}
        # The first batch was delivered twice, with the same eventIds (at-least-once).
        ids = [e.event_id for e in on_bus]
        assert sorted(ids) == sorted([e.event_id for e in committed + first_batch])
        for agg in ("o1", "o2"):
            first_seen: list[int] = []
            for e in on_bus:
                if e.aggregate_id == agg and e.version not in first_seen:
                    first_seen.append(e.version)
            assert first_seen == sorted(first_seen)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        store.close()


def test_mark_published_of_an_unknown_event_id_marks_nothing(cosmos: CosmosWriteStore) -> None:
    a = commit(cosmos, "a", 0)
    stranger = make_event("a", 1)  # same aggregate and version, different eventId
    cosmos.mark_published([stranger])
    assert cosmos.pending_events(10) == list(a)


# -- provisioning ---------------------------------------------------------------------------------


def test_store_without_provision_fails_naming_cqrs_provision(cosmos_server: CosmosServer) -> None:
    client = cosmos_server.client()
    database = cosmos_server.fresh_database_name()
    with pytest.raises(NotProvisioned, match="cqrs provision"):
        CosmosWriteStore(client, database)
    assert [d["id"] for d in client.list_databases() if d["id"] == database] == []  # nothing made


def test_provision_then_use_and_provision_is_idempotent(cosmos_server: CosmosServer) -> None:
    client = cosmos_server.client()
    database = cosmos_server.fresh_database_name()
    assert provision(client, database) == ["customers", "orders", "leases"]
    assert provision(client, database) == ["customers", "orders", "leases"]
    orders = client.get_database_client(database).get_container_client("orders").read()
    assert orders["partitionKey"]["paths"] == ["/id"]
    excluded = {p["path"] for p in orders["indexingPolicy"]["excludedPaths"]}
    assert {"/state/*", "/commandResults/*", "/pending/*"} <= excluded
    assert excluded == {p["path"] for p in INDEXING_POLICY["excludedPaths"]}
    store = CosmosWriteStore(client, database)
    try:
        commit(store, "o1", 0, command_id="c1")
        assert store.command_result("c1") == {"aggregateId": "o1", "version": 1}
        # The queries still work with those paths unindexed (the local server ignores the policy).
        assert [e.aggregate_id for e in store.pending_events(10)] == ["o1"]
    finally:
        store.close()


def test_cli_provision_creates_the_containers(cosmos_server: CosmosServer) -> None:
    database = cosmos_server.fresh_database_name()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CQRS_")},
        "CQRS_ENV": "azure",
        "CQRS_COSMOS_ENDPOINT": cosmos_server.endpoint,
        "CQRS_COSMOS_KEY": cosmos_server.key,
        "CQRS_COSMOS_DATABASE": database,
    }
    cqrs = Path(sys.executable).parent / "cqrs"
    done = subprocess.run(
        [str(cqrs), "provision"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "customers, orders, leases" in done.stdout
    CosmosWriteStore(cosmos_server.client(), database).close()  # provisioned: opens


# -- the change-feed outbox -----------------------------------------------------------------------


class RecordedFeed:
    """A change feed with Cosmos DB's latest-version semantics behind the ChangeFeed interface.

    The local server's feed is a stub after the first read, so this stand-in derives the feed
    from the container: a page holds every document whose ``_etag`` changed since the position,
    and a continuation names a recorded position (``"pos-<n>"``), shared by every feed on the
    container, as a durable Cosmos DB continuation is."""

    logs: dict[str, list[dict[str, str]]] = {}

    def __init__(self, container: Any, continuation: str | None) -> None:
        self._container = container
        log = self.logs.setdefault(f"{container.container_link}", [{}])
        self._log = log
        self._pos = 0 if continuation is None else int(continuation.removeprefix("pos-"))
        self.reads = 0

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        self.reads += 1
        seen = self._log[self._pos]
        docs = list(
            self._container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
        )
        changed = [d for d in docs if seen.get(d["id"]) != d["_etag"]]
        if not changed:
            return
        self._log.append({**seen, **{d["id"]: d["_etag"] for d in changed}})
        self._pos = len(self._log) - 1
        yield changed

    @property
    def continuation(self) -> str | None:
        return f"pos-{self._pos}" if self._pos else None


def _change_feed_store(client: Any, database: str) -> CosmosWriteStore:
    return CosmosWriteStore(client, database, outbox_feed="change_feed", change_feed=RecordedFeed)


def _lease(client: Any, database: str, container: str) -> str | None:
    leases = client.get_database_client(database).get_container_client("leases")
    docs = list(
        leases.query_items(
            "SELECT * FROM c WHERE c.id = @id",
            parameters=[{"name": "@id", "value": f"outbox-relay-{container}"}],
            enable_cross_partition_query=True,
        )
    )
    return docs[0]["continuation"] if docs else None


def test_change_feed_relay_delivers_in_order_and_saves_its_continuation_when_drained(
    cosmos_server: CosmosServer, tmp_path: Path
) -> None:
    client = cosmos_server.client()
    database = cosmos_server.fresh_database_name()
    provision(client, database)
    store = _change_feed_store(client, database)
    bus = LocalEventBus(tmp_path / "bus.sqlite", partition_count=2)
    try:
        committed = [*commit(store, "o1", 0, n_events=3), *commit(store, "o2", 0, n_events=2)]
        relay = OutboxRelay(store, bus, batch_size=2)  # several rounds: partial marks
        assert _lease(client, database, "orders") is None
        assert relay.drain() == len(committed)
        on_bus = all_bus_events(bus)
        assert [e.event_id for e in on_bus if e.aggregate_id == "o1"] == [
            e.event_id for e in committed if e.aggregate_id == "o1"
        ]
        assert {e.event_id for e in on_bus} == {e.event_id for e in committed}
        # Everything published: the query path agrees, and the continuation was saved.
        assert CosmosWriteStore(client, database).pending_events(100) == []
        saved = _lease(client, database, "orders")
        assert saved is not None
        # A restarted relay resumes from the saved continuation: nothing re-published, and a
        # command committed after the restart is picked up.
        restarted = _change_feed_store(client, database)
        assert restarted.pending_events(100) == []
        later = commit(restarted, "o3", 0)
        assert [e.event_id for e in restarted.pending_events(100)] == [later[0].event_id]
        OutboxRelay(restarted, bus).drain()
        assert len(all_bus_events(bus)) == len(committed) + 1  # no duplicates
    finally:
        bus.close()
        store.close()


def test_change_feed_relay_restarted_before_marking_loses_nothing(
    cosmos_server: CosmosServer, tmp_path: Path
) -> None:
    """Killed between publish and mark: no continuation was saved past the pending documents,
    so a new relay re-reads them and publishes again (same eventIds: at-least-once)."""
    client = cosmos_server.client()
    database = cosmos_server.fresh_database_name()
    provision(client, database)
    first = _change_feed_store(client, database)
    committed = commit(first, "o1", 0, n_events=2)
    bus = LocalEventBus(tmp_path / "bus.sqlite", partition_count=2)
    try:
        bus.publish(first.pending_events(100))  # published, then "killed" before mark
        assert _lease(client, database, "orders") is None
        second = _change_feed_store(client, database)
        OutboxRelay(second, bus).drain()
        ids = [e.event_id for e in all_bus_events(bus)]
        assert sorted(ids) == sorted([e.event_id for e in committed] * 2)
        assert CosmosWriteStore(client, database).pending_events(100) == []
    finally:
        bus.close()


def test_sdk_change_feed_reads_from_the_beginning_on_the_local_server(
    cosmos: CosmosWriteStore,
) -> None:
    """The SDK path (query_items_change_feed from "Beginning", the pager's continuation) on the
    local server: its first read works; following a continuation is a stub there (always 304),
    so what comes after is covered by RecordedFeed above and unverified against Cosmos DB."""
    from cqrs_dagster.command.writestore.cosmos import SdkChangeFeed

    commit(cosmos, "o1", 0)
    feed = SdkChangeFeed(cosmos._containers[ORDER], None)
    (page,) = list(feed.pages())
    assert [d["id"] for d in page] == ["o1"] and page[0]["pendingCount"] == 1
    assert feed.continuation  # a token to persist
