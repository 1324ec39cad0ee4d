"""Composition root: the one module that builds adapters from :class:`Settings`.

``Settings.env`` selects them: ``local`` (SQLite write store, SQLite bus log, Delta tables in a
folder) or ``azure`` (Cosmos DB, Event Hubs, Delta on ADLS Gen2 / Blob). Every host builds
through here: the HTTP app (:mod:`cqrs_dagster.web.app`), the Azure Functions host
(:mod:`cqrs_dagster.web.functions`), the CLI (``cqrs relay``, ``cqrs rebuild``, ``cqrs sql``) and
the Dagster resources (``defs/resources.py``). The adapters' constructors take plain values
(paths, clients, names), never Settings.

It sits above the adapters and the services it assembles (command, eventbus, projections,
query) and below the hosts. Adapters with heavy imports (the Azure SDKs, deltalake, DuckDB) are
imported when first built, so a process imports only what its environment uses.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from cqrs_dagster.command.group_commit import GroupCommitter
from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.port import WriteStore
from cqrs_dagster.eventbus.port import EventBus, OutgoingEvent, PartitionInfo, ReceivedEvent
from cqrs_dagster.settings import Settings, delta_storage_options

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.cosmos import CosmosClient

    from cqrs_dagster.command.writestore.cosmos import CosmosWriteStore
    from cqrs_dagster.eventbus.eventhubs import EventHubsBus
    from cqrs_dagster.projections.engine import ProjectionEngine
    from cqrs_dagster.projections.tables import TableStore
    from cqrs_dagster.query.views import ReadModels

# -- adapters ------------------------------------------------------------------------------------


def make_write_store(settings: Settings) -> WriteStore:
    """The WriteStore for the environment: SQLite (local) or Cosmos DB (azure)."""
    if settings.env == "azure":
        return make_cosmos_write_store(settings)
    from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore

    return SqliteWriteStore(settings.write_db_path, synchronous=settings.sqlite_synchronous)


# -- process-wide Azure credential and clients ---------------------------------------------------
# One DefaultAzureCredential (it caches its tokens) and one SDK client per endpoint for the
# process: a sensor tick or a request that builds an adapter reuses them instead of a new
# credential (a fresh token request) and a new connection each time.

_CACHE_LOCK = threading.RLock()
_CREDENTIAL: Any = None
_COSMOS_CLIENTS: dict[tuple[str, str | None], Any] = {}


def azure_credential() -> TokenCredential:
    """The process's ``DefaultAzureCredential`` (managed identity on Azure), built once."""
    global _CREDENTIAL
    with _CACHE_LOCK:
        if _CREDENTIAL is None:
            from azure.identity import DefaultAzureCredential

            _CREDENTIAL = DefaultAzureCredential()
        return cast("TokenCredential", _CREDENTIAL)


def cosmos_credential(settings: Settings) -> str | TokenCredential:
    """The key when ``CQRS_COSMOS_KEY`` is set, else Entra ID (accounts with local auth
    disabled; the identity needs the Cosmos DB Built-in Data Contributor role)."""
    key = settings.cosmos_key
    if key is not None and key.get_secret_value().strip():
        return key.get_secret_value()
    return azure_credential()


def cosmos_client(settings: Settings) -> CosmosClient:
    """The process's Cosmos client for ``CQRS_COSMOS_ENDPOINT`` (and key), built once."""
    settings.require("cosmos_endpoint")
    assert settings.cosmos_endpoint is not None
    credential = cosmos_credential(settings)
    cache_key = (settings.cosmos_endpoint, credential if isinstance(credential, str) else None)
    with _CACHE_LOCK:
        client = _COSMOS_CLIENTS.get(cache_key)
        if client is None:
            from azure.cosmos import CosmosClient

            client = _COSMOS_CLIENTS[cache_key] = CosmosClient(
                settings.cosmos_endpoint, credential=credential, enable_endpoint_discovery=False
            )
        return cast("CosmosClient", client)


def make_cosmos_write_store(settings: Settings) -> CosmosWriteStore:
    """Cosmos DB at ``CQRS_COSMOS_ENDPOINT`` / ``CQRS_COSMOS_DATABASE``, with the key
    ``CQRS_COSMOS_KEY`` or, without one, Entra ID (``DefaultAzureCredential``). The client is the
    process's (:func:`cosmos_client`); the containers must exist (``cqrs provision``)."""
    settings.require("cosmos_endpoint", "cosmos_database")
    from cqrs_dagster.command.writestore.cosmos import CosmosWriteStore

    return CosmosWriteStore(
        cosmos_client(settings),
        settings.cosmos_database,
        owns_client=False,
        outbox_feed=settings.cosmos_outbox_feed,
    )


def provision_cosmos(settings: Settings) -> list[str]:
    """Create the Cosmos DB database and containers (``cqrs provision``); the container names."""
    settings.require("cosmos_endpoint", "cosmos_database")
    from cqrs_dagster.command.writestore.cosmos import provision

    return provision(cosmos_client(settings), settings.cosmos_database)


def make_event_bus(settings: Settings) -> EventBus:
    """The EventBus for the environment: local SQLite log or Event Hubs (azure). On Azure it is
    the process's shared Event Hubs bus (:func:`shared_eventhubs_bus`): closing it is a no-op."""
    if settings.env == "azure":
        return shared_eventhubs_bus(settings)
    from cqrs_dagster.eventbus.local import LocalEventBus

    return LocalEventBus(settings.bus_db_path, partition_count=settings.bus_partitions)


def make_eventhubs_bus(settings: Settings) -> EventHubsBus:
    """Event Hubs with ``CQRS_EVENTHUB_CONNECTION_STRING`` if set, else the namespace
    ``CQRS_EVENTHUB_NAMESPACE`` with ``DefaultAzureCredential`` (Entra ID)."""
    from cqrs_dagster.eventbus.eventhubs import EventHubsBus

    settings.require("eventhub_name", "eventhub_consumer_group")
    hub, group = settings.eventhub_name, settings.eventhub_consumer_group
    secret = settings.eventhub_connection_string
    if secret is not None and secret.get_secret_value():
        return EventHubsBus(
            connection_string=secret.get_secret_value(), eventhub_name=hub, consumer_group=group
        )
    if settings.eventhub_namespace:
        return EventHubsBus(
            fully_qualified_namespace=settings.eventhub_namespace,
            credential=azure_credential(),
            eventhub_name=hub,
            consumer_group=group,
        )
    settings.require("eventhub_connection_string")
    raise AssertionError("unreachable: require() raises")  # pragma: no cover


_BUSES: dict[tuple[str | None, str | None, str, str], EventHubsBus] = {}


class _SharedBus(EventBus):
    """A process-wide bus handed to callers that close what they get: ``close`` does nothing."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner

    @property
    def partition_count(self) -> int:
        return self.inner.partition_count

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        self.inner.send(events)

    def read(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> list[ReceivedEvent]:
        return self.inner.read(partition, after_sequence_number, max_count)

    def partition_info(self, partition: int) -> PartitionInfo:
        return self.inner.partition_info(partition)

    def close(self) -> None:
        """Shared for the process (closed at exit)."""


def shared_eventhubs_bus(settings: Settings) -> EventBus:
    """One Event Hubs bus (producer connection, credential) per hub for the process, so a sensor
    tick or a request does not build a credential and connect again; closed at exit."""
    secret = settings.eventhub_connection_string
    key = (
        secret.get_secret_value() if secret is not None else None,
        settings.eventhub_namespace,
        settings.eventhub_name,
        settings.eventhub_consumer_group,
    )
    with _CACHE_LOCK:
        bus = _BUSES.get(key)
        if bus is None:
            bus = _BUSES[key] = make_eventhubs_bus(settings)
            if len(_BUSES) == 1:
                atexit.register(_close_buses)
    return _SharedBus(bus)


def _close_buses() -> None:
    with _CACHE_LOCK:
        buses = list(_BUSES.values())
        _BUSES.clear()
    for bus in buses:
        with contextlib.suppress(Exception):  # best effort at exit
            bus.close()


def make_table_store(settings: Settings) -> TableStore:
    """The Delta read store at ``settings.delta_root_uri``; a remote root gets the Azure storage
    options (:func:`cqrs_dagster.settings.delta_storage_options`)."""
    from cqrs_dagster.projections.tables import TableStore

    return TableStore(settings.delta_root_uri, delta_storage_options(settings))


def make_engine(settings: Settings, session: object = None) -> ProjectionEngine:
    """The projection engine ``CQRS_PROJECTION_ENGINE`` names: DuckDB in this process, or Spark
    over ``session`` (a Spark Connect session, e.g. Dagster's pyspark resource) or, without one,
    a new session to ``CQRS_SPARK_REMOTE``: ``EngineUnavailable`` naming the server and the
    setting when it does not answer."""
    from cqrs_dagster.projections.delta_io import use_jemalloc

    use_jemalloc()  # the projection's process (issue 14 (f))
    if settings.projection_engine == "spark":
        from cqrs_dagster.projections.engines.spark import SparkEngine, connect

        if session is not None:
            return SparkEngine(session, settings.spark_remote)
        return SparkEngine(connect(settings.spark_remote), settings.spark_remote, owned=True)
    from cqrs_dagster.projections.engines import DuckDBEngine

    return DuckDBEngine()


def make_read_models(settings: Settings) -> ReadModels:
    """DuckDB views over the read-model tables (close it after use); the tables of
    :func:`make_table_store` without its long storage retries."""
    from cqrs_dagster.projections.tables import TableStore
    from cqrs_dagster.query.views import ReadModels

    # Queries fail fast while storage is down (object_store's short retries), see settings.
    return ReadModels(
        TableStore(settings.delta_root_uri, delta_storage_options(settings, patient=False))
    )


# -- the command side of a host ------------------------------------------------------------------


class CommandSide:
    """What a command host runs on, built from ``settings``: the write store and the handler at
    once; the group committer, the bus and the outbox relay on first use (a host that never
    relays never connects to the bus). :meth:`close` releases them all, in reverse order.

    ``source`` names the host in the events' metadata (``cqrs-api``, ``cqrs-functions``).
    """

    def __init__(self, settings: Settings, *, source: str = "cqrs-api") -> None:
        self.settings = settings
        self.store = make_write_store(settings)
        self.handler = CommandHandler(self.store, source=source)
        self._lock = threading.Lock()
        self._committer: GroupCommitter | None = None
        self._bus: EventBus | None = None
        self._relay: OutboxRelay | None = None

    def committer(self) -> GroupCommitter | None:
        """The one writer thread that group-commits concurrent commands, when the store commits a
        batch at once (SQLite); None otherwise (Cosmos DB: each command is its own write)."""
        if not self.store.group_commit:
            return None
        with self._lock:
            if self._committer is None:
                self._committer = GroupCommitter(self.handler)
            return self._committer

    def bus(self) -> EventBus:
        """The event bus, connected on first use."""
        with self._lock:
            if self._bus is None:
                self._bus = make_event_bus(self.settings)
            return self._bus

    def relay(self) -> OutboxRelay:
        """The outbox relay from this store to :meth:`bus`, ``CQRS_RELAY_BATCH_SIZE`` at a time."""
        bus = self.bus()
        with self._lock:
            if self._relay is None:
                self._relay = OutboxRelay(
                    self.store,
                    bus,
                    self.settings.relay_batch_size,
                    linger=self.settings.relay_linger_seconds,
                )
            return self._relay

    def close(self) -> None:
        """Finish the queued commands, then close the bus and the store."""
        with self._lock:
            committer, bus = self._committer, self._bus
            self._committer = self._bus = self._relay = None
        try:
            if committer is not None:
                committer.close()
            if bus is not None:
                bus.close()
        finally:
            self.store.close()
