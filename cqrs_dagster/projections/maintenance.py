"""Table maintenance: compaction (``optimize.compact``), vacuum and a log checkpoint.

Compaction rewrites many small files (each projection commit adds some) into few large ones;
it changes no rows and keeps the tables' app-transaction checkpoints. Vacuum deletes files no
version within ``retention_hours`` references; readers of older versions lose time travel past it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from deltalake import DeltaTable

from .delta_io import row_count
from .schemas import ALL_TABLES, READ_MODELS
from .tables import TableStore, writer_properties

# Follow mode commits a file or more to every table it writes each pass (a pass every 3 s under
# load): ~1,200 files an hour per table until the daily maintenance. Every pass opens, lists
# and prunes each table's live files, so its cost grew with them: 600 new orders a pass, 0.35 s
# over the first 50 passes, 0.77 s over passes 200-250; 0.34 and 0.43 s with this compaction
# (bench/experiments/follow_pass.py, CREATES=1). A following
# run compacts a table's small files once it holds this many live files (checked every
# FOLLOW_COMPACT_EVERY_PASSES passes), so a pass stays in proportion to its events.
FOLLOW_COMPACT_MIN_FILES = 32
FOLLOW_COMPACT_EVERY_PASSES = 10
# Files of at least this size are left alone by a following run's compaction (delta-rs
# bin-packs the smaller ones up to it): each compaction then rewrites at most the day's last,
# still filling, file plus the new small ones, not the whole day. The daily maintenance packs
# them further, to the table's target size.
FOLLOW_COMPACT_TARGET_BYTES = 16 * 1024 * 1024


def _compact(table: DeltaTable, name: str, target_size: int | None = None) -> dict[str, Any]:
    """Bin-pack the table's small files (up to ``target_size``, default the table's target file
    size): rewritten with the table's writer properties, so its bloom filters are kept."""
    return table.optimize.compact(
        target_size=target_size, writer_properties=writer_properties(name)
    )


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
    compacted = _compact(table, name)
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


@dataclass(frozen=True)
class Compaction:
    """What compacting one table's small files did."""

    table: str
    files_before: int
    files_removed: int
    files_added: int
    version: int
    seconds: float


def compact_small_files(tables: TableStore, min_files: int | None = None) -> list[Compaction]:
    """Compact every read model holding at least ``min_files`` (default
    :data:`FOLLOW_COMPACT_MIN_FILES`) live files (bin-packing of its
    small files, partition by partition, with the table's writer properties; no rows change and
    the checkpoints stay). Between a following run's passes, under the writer pool it holds: no
    other writer commits meanwhile. Vacuum stays with the daily maintenance (readers of older
    versions keep their files)."""
    least = FOLLOW_COMPACT_MIN_FILES if min_files is None else min_files
    done: list[Compaction] = []
    for name in READ_MODELS:
        started = time.perf_counter()
        table = tables.open(name)
        if table is None:
            continue
        before = len(table.file_uris())
        if before < least:
            continue
        configured = table.metadata().configuration.get("delta.targetFileSize")
        target = FOLLOW_COMPACT_TARGET_BYTES
        if configured is not None:
            target = min(target, int(configured))
        metrics = _compact(table, name, target)
        removed = int(metrics.get("numFilesRemoved", 0))
        if removed == 0:  # no partition held two small files: nothing was committed
            continue
        done.append(
            Compaction(
                table=name,
                files_before=before,
                files_removed=removed,
                files_added=int(metrics.get("numFilesAdded", 0)),
                version=int(table.version()),
                seconds=time.perf_counter() - started,
            )
        )
    return done


def maintain_all(tables: TableStore, retention_hours: int) -> list[MaintenanceReport]:
    """Maintain every read-model table (and the dead-letter table) that exists."""
    reports = [maintain_table(tables, name, retention_hours) for name in ALL_TABLES]
    return [r for r in reports if r is not None]
