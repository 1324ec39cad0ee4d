"""Blue/green housekeeping: roll a read model back to the physical table its last rebuild
retired, and delete retired physical tables once they are older than the rollback window."""

from __future__ import annotations

from datetime import UTC, datetime

from . import pointers
from .rebuild import KEYS
from .tables import TableStore


def rollback(tables: TableStore, table: str, *, run_id: str) -> str:
    """Point ``table`` back at the physical table its last rebuild retired; returns its name."""
    doc = pointers.read(tables.root, tables.storage_options)
    retired = [r for r in doc["retired"] if r.get("table") == table]
    if not retired:
        raise ValueError(f"{table} has no retired table to roll back to")
    previous = str(retired[-1]["physical"])
    tables.switch(table, previous, expected=tables.physical(table), by=f"rollback:{run_id}")
    return previous


def drop_retired(tables: TableStore, *, older_than_hours: float = 0.0) -> list[str]:
    """Delete the retired physical tables retired at least ``older_than_hours`` ago (never one a
    logical name points at now); returns their names."""
    now = datetime.now(UTC)
    with pointers.locked(tables.root):
        doc = pointers.read(tables.root, tables.storage_options)
        current = {pointers.physical(doc, name) for name in KEYS} | set(doc["tables"].values())
        doomed = sorted(
            {
                str(entry["physical"])
                for entry in doc["retired"]
                if str(entry["physical"]) not in current
                and (now - datetime.fromisoformat(str(entry["retired_at"]))).total_seconds()
                >= older_than_hours * 3600
            }
        )
        for name in doomed:
            pointers.delete_folder(tables.root, tables.storage_options, name)
        pointers.write(tables.root, tables.storage_options, pointers.dropped(doc, set(doomed)))
    return doomed
