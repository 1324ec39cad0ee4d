"""Where the read-model Delta tables live, and opening / creating them with their fixed layout."""

from __future__ import annotations

from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from . import pointers
from .schemas import ORDERS, RAW_EVENTS, SCHEMAS

# Partition columns per table (absent: unpartitioned). raw_events by the event's own UTC date (a
# republished duplicate shares it); orders by creation day (recent orders -> few files to rewrite).
PARTITION_BY: dict[str, list[str]] = {RAW_EVENTS: ["event_date"], ORDERS: ["created_day"]}


@dataclass(frozen=True)
class TableStore:
    """The folder (local path or abfss:// / az:// URI) holding every read-model Delta table.

    A read model's logical name resolves to its current physical table through the pointer
    document at the root (:mod:`.pointers`; default: the logical name itself), so a rebuilt
    table is switched in atomically. ``overrides`` pins logical names to other table URIs (a
    rebuild's shadow, an audit's scratch copy) for the projection steps run against them.
    """

    root: str
    storage_options: dict[str, str] | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def physical(self, name: str) -> str:
        """The physical table the logical ``name`` points at now (under ``root``)."""
        return pointers.physical(pointers.read(self.root, self.storage_options), name)

    def physical_uri(self, physical: str) -> str:
        """The URI of a physical table under ``root``."""
        return f"{self.root.rstrip('/')}/{physical}"

    def uri(self, name: str) -> str:
        """The table's URI: ``<root>/<physical name>`` (or its override)."""
        for logical, uri in self.overrides:
            if logical == name:
                return uri
        return self.physical_uri(self.physical(name))

    def switch(self, name: str, physical: str, *, expected: str | None = None, by: str = "") -> str:
        """Point ``name`` at ``physical`` atomically; returns the previous physical table.

        With ``expected``, refuses (ValueError) when the pointer moved meanwhile.
        """
        with pointers.locked(self.root):
            doc = pointers.read(self.root, self.storage_options)
            previous = pointers.physical(doc, name)
            if expected is not None and previous != expected:
                raise ValueError(f"{name} points at {previous}, not {expected}: not switched")
            pointers.write(
                self.root, self.storage_options, pointers.switched(doc, name, physical, by)
            )
        return previous

    def with_overrides(self, overrides: dict[str, str]) -> TableStore:
        """This store with some logical names pinned to other table URIs."""
        merged = dict(self.overrides) | overrides
        return TableStore(self.root, self.storage_options, tuple(sorted(merged.items())))

    def open(self, name: str) -> DeltaTable | None:
        """The table at its latest version, or None if it was never created.

        The pointer is read again after loading: a table loaded while a switch happened is
        loaded again from the new pointer, so a handle this returns was loaded from a table
        that was current at load time (what the rebuild's fence relies on).
        """
        uri = self.uri(name)
        while True:
            try:
                table = DeltaTable(uri, storage_options=self.storage_options)
            except TableNotFoundError:
                table = None
            again = self.uri(name)
            if again == uri:
                return table
            uri = again

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
