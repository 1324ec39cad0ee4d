"""Composition root: builds the adapters that ``Settings.env`` selects (local or azure).

Azure adapters are imported lazily so the local platform never imports their SDKs' heavy paths.
"""

from __future__ import annotations

from cqrs_dagster.command.writestore.port import WriteStore
from cqrs_dagster.eventbus.port import EventBus
from cqrs_dagster.settings import Settings


def make_write_store(settings: Settings) -> WriteStore:
    """The WriteStore for the environment: SQLite (local) or Cosmos DB (azure)."""
    if settings.env == "azure":
        from cqrs_dagster.command.writestore.cosmos import CosmosWriteStore

        return CosmosWriteStore.from_settings(settings)
    from cqrs_dagster.command.writestore.sqlite import SqliteWriteStore

    return SqliteWriteStore(settings.write_db_path, synchronous=settings.sqlite_synchronous)


def make_event_bus(settings: Settings) -> EventBus:
    """The EventBus for the environment: local SQLite log or Event Hubs (azure)."""
    if settings.env == "azure":
        from cqrs_dagster.eventbus.eventhubs import EventHubsBus

        return EventHubsBus.from_settings(settings)
    from cqrs_dagster.eventbus.local import LocalEventBus

    return LocalEventBus(settings.bus_db_path, partition_count=settings.bus_partitions)
