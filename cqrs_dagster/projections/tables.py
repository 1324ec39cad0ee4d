"""Where the read-model Delta tables live, and opening / creating them with their fixed layout."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from .schemas import ORDERS, RAW_EVENTS, SCHEMAS

if TYPE_CHECKING:
    from cqrs_dagster.settings import Settings

# Partition columns per table (absent: unpartitioned). raw_events by the event's own UTC date (a
# republished duplicate shares it); orders by creation day (recent orders -> few files to rewrite).
PARTITION_BY: dict[str, list[str]] = {RAW_EVENTS: ["event_date"], ORDERS: ["created_day"]}


def _is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


@dataclass(frozen=True)
class TableStore:
    """The folder (local path or abfss:// / az:// URI) holding every read-model Delta table."""

    root: str
    storage_options: dict[str, str] | None = None

    def uri(self, name: str) -> str:
        """The table's URI: ``<root>/<name>``."""
        return f"{self.root.rstrip('/')}/{name}"

    def open(self, name: str) -> DeltaTable | None:
        """The table at its latest version, or None if it was never created."""
        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self.open(name) is not None

    def ensure(self, name: str) -> DeltaTable:
        """Open the table, creating it empty with its schema and partitioning if missing."""
        table = self.open(name)
        if table is not None:
            return table
        DeltaTable.create(
            self.uri(name),
            SCHEMAS[name],
            mode="ignore",
            partition_by=PARTITION_BY.get(name),
            name=name,
            storage_options=self.storage_options,
        )
        created = self.open(name)
        if created is None:  # pragma: no cover - create just succeeded
            raise RuntimeError(f"Delta table {self.uri(name)} could not be created")
        return created

    @classmethod
    def from_settings(cls, settings: Settings) -> TableStore:
        """Tables under ``settings.delta_root_uri``; remote roots get the Azure storage options."""
        root = settings.delta_root_uri
        if settings.env == "local" and _is_local(root):
            return cls(root=root)
        storage = importlib.import_module("cqrs_dagster.projections.storage")
        options: dict[str, str] | None = storage.delta_storage_options(settings)
        return cls(root=root, storage_options=options)
