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

import threading
from typing import TYPE_CHECKING

from cqrs_dagster.command.group_commit import GroupCommitter
from cqrs_dagster.command.handler import CommandHandler
from cqrs_dagster.command.relay import OutboxRelay
from cqrs_dagster.command.writestore.port import WriteStore
from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.settings import Settings, delta_storage_options

if TYPE_CHECKING:
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


def make_cosmos_write_store(settings: Settings) -> CosmosWriteStore:
    """Cosmos DB with ``CQRS_COSMOS_ENDPOINT`` / ``CQRS_COSMOS_KEY`` / ``CQRS_COSMOS_DATABASE``
    (SettingsError naming the missing ones)."""
    settings.require("cosmos_endpoint", "cosmos_key", "cosmos_database")
    assert settings.cosmos_endpoint is not None and settings.cosmos_key is not None
    from azure.cosmos import CosmosClient

    from cqrs_dagster.command.writestore.cosmos import CosmosWriteStore

    client = CosmosClient(
        settings.cosmos_endpoint,
        credential=settings.cosmos_key.get_secret_value(),
        enable_endpoint_discovery=False,
    )
    return CosmosWriteStore(client, settings.cosmos_database)


def make_event_bus(settings: Settings) -> EventBus:
    """The EventBus for the environment: local SQLite log or Event Hubs (azure)."""
    if settings.env == "azure":
        return make_eventhubs_bus(settings)
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
        from azure.identity import DefaultAzureCredential

        return EventHubsBus(
            fully_qualified_namespace=settings.eventhub_namespace,
            credential=DefaultAzureCredential(),
            eventhub_name=hub,
            consumer_group=group,
        )
    settings.require("eventhub_connection_string")
    raise AssertionError("unreachable: require() raises")  # pragma: no cover


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
    if settings.projection_engine == "spark":
        from cqrs_dagster.projections.engines.spark import SparkEngine, connect

        if session is not None:
            return SparkEngine(session, settings.spark_remote)
        return SparkEngine(connect(settings.spark_remote), settings.spark_remote, owned=True)
    from cqrs_dagster.projections.engines import DuckDBEngine

    return DuckDBEngine()


def make_read_models(settings: Settings) -> ReadModels:
    """DuckDB views over the read-model tables of :func:`make_table_store` (close it after use)."""
    from cqrs_dagster.query.views import ReadModels

    return ReadModels(make_table_store(settings))


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
                self._relay = OutboxRelay(self.store, bus, self.settings.relay_batch_size)
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
