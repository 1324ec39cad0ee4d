"""Where the read-model Delta tables live, and opening / creating them with their fixed layout."""

from __future__ import annotations

from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from .schemas import ORDERS, RAW_EVENTS, SCHEMAS

# Partition columns per table (absent: unpartitioned). raw_events by the event's own UTC date (a
# republished duplicate shares it); orders by creation day (recent orders -> few files to rewrite).
PARTITION_BY: dict[str, list[str]] = {RAW_EVENTS: ["event_date"], ORDERS: ["created_day"]}


@dataclass(frozen=True)
class TableStore:
    """The folder (local path or abfss:// / az:// URI) holding every read-model Delta table.

    A read model ``name`` is the Delta table at ``<root>/<name>``, always: a rebuild swaps its
    content in with one commit on that table (:mod:`.rebuild`), so any reader of the path is
    current. ``overrides`` pins names to other table URIs (a rebuild's shadow, an audit's
    scratch copy) for the projection steps run against them.
    """

    root: str
    storage_options: dict[str, str] | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def uri(self, name: str) -> str:
        """The table's URI: ``<root>/<name>`` (or its override)."""
        for logical, uri in self.overrides:
            if logical == name:
                return uri
        return f"{self.root.rstrip('/')}/{name}"

    def with_overrides(self, overrides: dict[str, str]) -> TableStore:
        """This store with some logical names pinned to other table URIs."""
        merged = dict(self.overrides) | overrides
        return TableStore(self.root, self.storage_options, tuple(sorted(merged.items())))

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
