"""Table maintenance: compaction (``optimize.compact``), vacuum and a log checkpoint.

Compaction rewrites many small files (each projection commit adds some) into few large ones;
it changes no rows and keeps the tables' app-transaction checkpoints. Vacuum deletes files no
version within ``retention_hours`` references; readers of older versions lose time travel past it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .delta_io import row_count
from .schemas import ALL_TABLES
from .tables import TableStore, writer_properties


@dataclass(frozen=True)
class MaintenanceReport:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    files_compacted: int
    files_vacuumed: int
    rows: int
    version: int
    seconds: float


def maintain_table(tables: TableStore, name: str, retention_hours: int) -> MaintenanceReport | None:
    """Compact, vacuum and checkpoint one table; None when the table does not exist yet."""
    started = time.perf_counter()
    table = tables.open(name)
    if table is None:
        return None
    before = len(table.file_uris())
    # Compaction rewrites files: with the table's writer properties (bloom filters) kept.
    compacted = table.optimize.compact(writer_properties=writer_properties(name))
    vacuumed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=False,
    )
    table.create_checkpoint()
    table.update_incremental()
    return MaintenanceReport(
        table=name,
        files_before=before,
        files_after=len(table.file_uris()),
        files_compacted=int(compacted.get("numFilesRemoved", 0)),
        files_vacuumed=len(vacuumed),
        rows=row_count(table),
        version=int(table.version()),
        seconds=time.perf_counter() - started,
    )


def maintain_all(tables: TableStore, retention_hours: int) -> list[MaintenanceReport]:
    """Maintain every read-model table (and the dead-letter table) that exists."""
    reports = [maintain_table(tables, name, retention_hours) for name in ALL_TABLES]
    return [r for r in reports if r is not None]
