"""Rebuild a read model from raw_events into a shadow table, compare, and switch readers to it.

``rebuild`` replays raw_events from ``ingest_seq`` 0 into a new physical table (the shadow)
through the very step the live projection runs (``silver.project`` for orders / customers, the
gold builders for the gold tables: the logic cannot diverge), catches up with the live table's
checkpoint, compares both at that same checkpoint (all columns, sorted by key) and, only when
they are equal (or with ``force``), points the logical name at the shadow. The old physical table
stays for rollback (:func:`rollback`) until :func:`drop_retired` deletes it.

Why a live projection running meanwhile can neither lose nor double an event
----------------------------------------------------------------------------
1. Every projection commit carries the table's own checkpoint (``<table>/ingest_seq`` txn) in
   the same Delta commit as its rows, and each step starts from the checkpoint of the table it
   writes. So whatever table a writer lands on, it is internally consistent: the new table
   moves on from ITS checkpoint, and work that lands on the old table is redone on the new one.
2. Delta rejects a commit whose txn app id was committed by another writer since the snapshot
   it was planned from ("Concurrent transaction failed"). Two steps can therefore never both
   commit the same batch on one table, old or new.
3. After the switch the rebuild commits a fence (a rows-free commit of the old table's own
   checkpoints) on the old table. ``TableStore.open`` re-reads the pointer after loading, so
   any writer still holding the old table loaded it before the switch, hence before the fence,
   and its commit now fails (point 2) instead of landing unseen; the run is simply retried.
4. The rebuild catches the shadow up with the live checkpoint right before switching, and after
   the fence it brings the new table up to the old table's final checkpoint itself, so readers
   are never left behind the old table for more than that last catch-up.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from . import pointers
from .commit import commit_checkpoints_only
from .context import Fault, StepContext, hit
from .delta_io import enqueued_app_id, seq_app_id, txn
from .engine import ProjectionEngine
from .engines import DuckDBEngine
from .pipeline import stage
from .schemas import (
    CUSTOMERS,
    DAILY_ORDER_METRICS,
    DEAD_LETTER_EVENTS,
    ORDER_SUMMARY,
    ORDERS,
    SCHEMAS,
)
from .silver import SPECS
from .tables import TableStore

Progress = Callable[[int, int], None]
KEYS: dict[str, str] = {
    ORDERS: "order_id",
    CUSTOMERS: "customer_id",
    ORDER_SUMMARY: "order_id",
    DAILY_ORDER_METRICS: "order_date",
}
REBUILDABLE = tuple(KEYS)
SCRATCH = "_rebuild"  # per-rebuild scratch (the shadow's dead letters), deleted at the end
MAX_ROUNDS = 50
SHOWN = 5


def _no_progress(done: int, total: int) -> None:
    del done, total


@dataclass(frozen=True)
class Comparison:
    """Shadow vs live at one checkpoint (raw ``ingest_seq``)."""

    checkpoint: int
    shadow_rows: int
    live_rows: int
    differing_keys: int
    first_differences: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.differing_keys == 0


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did. ``old_physical`` is kept for rollback when ``switched``."""

    table: str
    switched: bool
    forced: bool
    comparison: Comparison
    old_physical: str
    new_physical: str
    events_replayed: int
    caught_up_after_switch: int
    seconds: float

    @property
    def equal(self) -> bool:
        return self.comparison.equal


@dataclass(frozen=True)
class AuditReport:
    """A replay of raw_events compared with the live table at its checkpoint (nothing switched)."""

    table: str
    checkpoint: int
    rows: int
    differing_keys: int
    first_differences: list[str]
    events_replayed: int
    seconds: float

    @property
    def passed(self) -> bool:
        return self.differing_keys == 0


def compare(shadow: DeltaTable, live: DeltaTable, table: str, checkpoint: int) -> Comparison:
    """Compare two snapshots of ``table`` row by row (all columns), keyed by the table's key."""
    names, key = SCHEMAS[table].names, KEYS[table]
    a = shadow.to_pyarrow_table().select(names).sort_by(key)
    b = live.to_pyarrow_table().select(names).sort_by(key)
    if a.num_rows == b.num_rows and a.equals(b):
        return Comparison(checkpoint, a.num_rows, b.num_rows, 0)
    rows: dict[str, list[list[str]]] = defaultdict(lambda: [[], []])
    for side, data in enumerate((a, b)):
        for row in data.to_pylist():
            rows[str(row[key])][side].append(repr(sorted(row.items())))
    differing = sorted(k for k, (x, y) in rows.items() if sorted(x) != sorted(y))
    return Comparison(checkpoint, a.num_rows, b.num_rows, len(differing), differing[:SHOWN])


def new_physical_name(table: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{table}__r{stamp}{uuid.uuid4().hex[:6]}"


class Replayer:
    """Brings a shadow copy of ``table`` to the live table's checkpoint with the live step code."""

    def __init__(
        self,
        tables: TableStore,
        table: str,
        shadow_uri: str,
        scratch_uri: str,
        *,
        run_id: str,
        batch_size: int,
        progress: Progress,
        write_live: bool,
        engine: ProjectionEngine,
    ) -> None:
        if table not in KEYS:
            raise ValueError(f"{table!r} cannot be rebuilt; choose one of {', '.join(KEYS)}")
        self.tables, self.table, self.run_id = tables, table, run_id
        self.batch_size, self.progress, self.write_live = max(1, batch_size), progress, write_live
        self.shadow_tables = tables.with_overrides(
            {table: shadow_uri, DEAD_LETTER_EVENTS: f"{scratch_uri}/{DEAD_LETTER_EVENTS}"}
        )
        self.live = StepContext(tables, run_id, engine)
        self.stage = stage(table)
        self.replayed = 0

    def shadow(self) -> DeltaTable:
        return self.shadow_tables.ensure(self.table)

    def checkpoint(self, table: DeltaTable | None) -> int:
        return txn(table, seq_app_id(self.table))

    def advance(self, target: int) -> None:
        """Replay raw events into the shadow up to ``target`` (silver: exactly to it)."""
        at = self.checkpoint(self.shadow())
        if self.stage.batched:
            while at < target:
                step = self.stage.run(
                    self.live.on(self.shadow_tables), max_events=min(self.batch_size, target - at)
                )
                moved = step.checkpoint[seq_app_id(self.table)]
                if moved <= at:
                    raise RuntimeError(f"raw_events ends before {self.table}'s checkpoint {target}")
                self.replayed += moved - at
                at = moved
                self.progress(at + 1, target + 1)
            return
        # gold: the builders go as far as silver has reached (>= target once silver is there)
        self._build_gold(self.shadow_tables, full=at < 0)
        now = self.checkpoint(self.shadow())
        self.replayed += max(0, now - at)
        self.progress(now + 1, max(now, target) + 1)

    def _build_gold(self, tables: TableStore, *, full: bool) -> None:
        self.stage.run(self.live.on(tables), max_events=self.batch_size, full=full)

    def sync(self, live_uri: str) -> tuple[DeltaTable, int]:
        """Advance the shadow until it sits at the checkpoint of a snapshot of the live table;
        returns that snapshot and checkpoint."""
        for _ in range(MAX_ROUNDS):
            live = DeltaTable(live_uri, storage_options=self.tables.storage_options)
            target = self.checkpoint(live)
            at = self.checkpoint(self.shadow())
            if at == target:
                return live, target
            if at < target:
                self.advance(target)
            elif self.write_live:  # gold only: silver moved on after the live gold's last run
                self._build_gold(self.tables, full=False)
            else:
                raise RuntimeError(
                    f"{self.table} is behind the silver tables (at {target}, replay at {at}): "
                    "materialize it first"
                )
        raise RuntimeError(f"{self.table} kept moving; could not meet its checkpoint")


def rebuild(
    tables: TableStore,
    table: str,
    *,
    run_id: str,
    progress: Progress = _no_progress,
    batch_size: int = 100_000,
    force: bool = False,
    fault: Fault = None,
    engine: ProjectionEngine | None = None,
) -> RebuildReport:
    """Rebuild ``table`` into a shadow, compare with live, switch readers if equal (or forced)."""
    started = time.perf_counter()
    old = tables.physical(table)
    if tables.open(table) is None:
        raise ValueError(f"{table} has no live table to rebuild (nothing projected yet)")
    new = new_physical_name(table)
    scratch = f"{SCRATCH}/{new}"
    replay = Replayer(
        tables,
        table,
        tables.physical_uri(new),
        tables.physical_uri(scratch),
        run_id=run_id,
        batch_size=batch_size,
        progress=progress,
        write_live=True,
        engine=engine or DuckDBEngine(),
    )
    try:
        live, at = replay.sync(tables.physical_uri(old))
        result = compare(replay.shadow(), live, table, at)
        if not (result.equal or force):
            pointers.delete_folder(tables.root, tables.storage_options, new)
            return RebuildReport(
                table, False, force, result, old, new, replay.replayed, 0, _since(started)
            )
        replay.sync(tables.physical_uri(old))  # events since the compare: same code on both
        tables.switch(table, new, expected=old, by=run_id)
        hit(fault, "rebuild.after_switch")
        final = _fence(tables, table, old, run_id)
        caught_up = _catch_up(replay.live, table, final, batch_size)
    finally:
        pointers.delete_folder(tables.root, tables.storage_options, scratch)
    return RebuildReport(
        table, True, force, result, old, new, replay.replayed, caught_up, _since(started)
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _fence(tables: TableStore, table: str, physical: str, run_id: str) -> int:
    """Commit the old table's own checkpoints on it again, so any commit planned before this one
    fails; returns the old table's final checkpoint."""
    uri = tables.physical_uri(physical)
    for _ in range(MAX_ROUNDS):
        old = DeltaTable(uri, storage_options=tables.storage_options)
        points = {
            app: value
            for app in (seq_app_id(table), enqueued_app_id(table))
            if (value := txn(old, app)) >= 0
        }
        if not points:
            return -1
        try:
            commit_checkpoints_only(old, table, points, run_id, "retire_table")
            return points[seq_app_id(table)]
        except CommitFailedError:
            continue  # a projection commit landed first: fence on top of it
    raise RuntimeError(f"could not fence {uri}")


def _catch_up(ctx: StepContext, table: str, final: int, batch_size: int) -> int:
    """Bring the (now current) new table to the old table's final checkpoint with the live step."""
    tables = ctx.tables
    start = txn(tables.open(table), seq_app_id(table))
    for _ in range(MAX_ROUNDS * 10):
        at = txn(tables.open(table), seq_app_id(table))
        if at >= final:
            return at - start
        try:
            stage(table).run(ctx, max_events=batch_size)
        except CommitFailedError:
            continue  # the live projection committed the same batch first
    raise RuntimeError(f"could not catch {table} up to {final}")


def replay_audit(
    tables: TableStore,
    table: str,
    *,
    run_id: str,
    scratch_root: str,
    batch_size: int = 100_000,
    progress: Progress = _no_progress,
    engine: ProjectionEngine | None = None,
) -> AuditReport:
    """Replay raw_events into a scratch copy of a silver table and compare it with the live
    table at the live checkpoint. Writes nothing under the live root; the scratch is deleted.
    (Gold tables are audited against silver by the gold-vs-recompute quality checks.)"""
    if table not in SPECS:
        raise ValueError(f"replay audit covers {', '.join(SPECS)}, not {table!r}")
    started = time.perf_counter()
    if tables.open(table) is None:
        raise ValueError(f"{table} has no live table to audit (nothing projected yet)")
    folder = f"audit-{uuid.uuid4().hex[:12]}"
    base = f"{scratch_root.rstrip('/')}/{folder}"
    replay = Replayer(
        tables,
        table,
        f"{base}/{table}",
        base,
        run_id=run_id,
        batch_size=batch_size,
        progress=progress,
        write_live=False,
        engine=engine or DuckDBEngine(),
    )
    try:
        live, at = replay.sync(tables.uri(table))
        result = compare(replay.shadow(), live, table, at)
    finally:
        pointers.delete_folder(scratch_root, tables.storage_options, folder)
    return AuditReport(
        table,
        at,
        result.live_rows,
        result.differing_keys,
        result.first_differences,
        replay.replayed,
        _since(started),
    )


def describe(report: RebuildReport) -> dict[str, Any]:
    """The report as plain values (CLI output, Dagster metadata)."""
    c = report.comparison
    return {
        "table": report.table,
        "switched": report.switched,
        "forced": report.forced,
        "equal": c.equal,
        "checkpoint": c.checkpoint,
        "rows": c.shadow_rows,
        "live_rows": c.live_rows,
        "differing_keys": c.differing_keys,
        "first_differences": c.first_differences,
        "old_physical": report.old_physical,
        "new_physical": report.new_physical,
        "events_replayed": report.events_replayed,
        "caught_up_after_switch": report.caught_up_after_switch,
        "seconds": round(report.seconds, 3),
    }
