"""Rebuild a read model from raw_events into a shadow table, compare, and swap it into the live
table with ONE Delta commit.

The live read model is always the Delta table at ``<root>/<name>``: every reader that opens that
path (DuckDB here, Synapse and Power BI on Azure, Spark, a user's ``deltalake``) sees a rebuild
the moment it lands, with no pointer to follow.

``rebuild`` replays raw_events from ``ingest_seq`` 0 into a shadow table under the scratch
folder ``<root>/_rebuild/<id>/`` through the very step the live projection runs
(``silver.project`` for orders / customers, the gold builders for the gold tables: the logic
cannot diverge), catches up with the live table's checkpoint, compares both at that same
checkpoint (all columns, sorted by key) and, only when they are equal (or with ``force``),
overwrites the live table with the shadow's rows in one commit (same schema and partitioning)
that carries the live table's checkpoints (its txn app ids). The scratch folder is deleted.
Rollback is time travel on the live table (:func:`rollback`: the version before the swap,
rows and checkpoints, in one commit again).

Why a live projection running meanwhile can neither lose nor double an event
----------------------------------------------------------------------------
1. Every projection commit carries the table's own checkpoint (``<table>/ingest_seq`` txn) in
   the same Delta commit as its rows, and each step starts from the checkpoint of the table it
   writes.
2. Delta rejects a commit whose txn app id was committed by another writer since the snapshot
   it was planned from ("Concurrent transaction failed"). The swap is planned from the very
   live snapshot whose checkpoint the shadow was synced to and carries that snapshot's
   checkpoints: a projection commit that lands between the sync and the swap makes the swap
   fail, and the rebuild syncs the shadow again and retries. So the swapped-in rows cover
   exactly the checkpoint they are committed with.
3. A projection step that planned from the live table before the swap and commits after it
   fails the same way (the swap carried its txn app ids); the step is simply retried and
   continues from the swapped-in checkpoint.
4. A silver step may commit in two: new keys appended (txn ``<table>/appended_seq``, its batch's
   checkpoint), then its MERGE (``<table>/ingest_seq``). A snapshot between the two is not the
   table at any checkpoint, so the rebuild neither compares with nor swaps over it: it waits
   for the MERGE (:func:`_settled`). Silver swaps always carry ``appended_seq`` so an append
   planned before the swap conflicts with it.

Upgrading from the pointer layout (``_cqrs_tables.json``, ``<name>__r<stamp>`` tables): the
document is no longer read, so ``<root>/<name>`` (the copy the last rebuild retired) is the live
table again and the projection catches it up from its own checkpoint (nothing is lost; a forced
rebuild's corrections must be redone). Delete the ``<name>__r*`` folders and the document.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake._internal import DeltaFileSystemHandler
from deltalake.exceptions import CommitFailedError

from cqrs_dagster.settings import is_local_root

from .commit import appended_app_id, commit_props
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
from .tables import PARTITION_BY, TableStore, writer_properties

Progress = Callable[[int, int], None]
KEYS: dict[str, str] = {
    ORDERS: "order_id",
    CUSTOMERS: "customer_id",
    ORDER_SUMMARY: "order_id",
    DAILY_ORDER_METRICS: "order_date",
}
REBUILDABLE = tuple(KEYS)
SCRATCH = "_rebuild"  # per-rebuild scratch (the shadow and its dead letters), deleted at the end
SWAP = "rebuild_swap"  # cqrs.operation of the swap commit
ROLLBACK = "rebuild_rollback"
MAX_ROUNDS = 50
MID_STEP_WAIT = 0.1  # seconds between looks at a silver step between its append and MERGE
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
    """What a rebuild did. When ``switched``, ``version`` is the live table's swap commit and
    ``previous_version`` the version before it (the rollback target); -1 otherwise."""

    table: str
    switched: bool
    forced: bool
    comparison: Comparison
    version: int
    previous_version: int
    swap_attempts: int
    events_replayed: int
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


def scratch_name(table: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{SCRATCH}/{table}__r{stamp}{uuid.uuid4().hex[:6]}"


def delete_folder(root: str, storage_options: dict[str, str] | None, relative: str) -> None:
    """Delete ``<root>/<relative>`` and everything under it (missing: nothing to do)."""
    if is_local_root(root):
        shutil.rmtree(Path(root.removeprefix("file://")) / relative, ignore_errors=True)
        return
    handler = DeltaFileSystemHandler(root.rstrip("/"), storage_options)
    with contextlib.suppress(FileNotFoundError):
        handler.delete_dir(relative)


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
    """Rebuild ``table`` into a shadow, compare with live and, if equal (or forced), swap the
    shadow's rows into the live table ``<root>/<table>`` with one Delta commit."""
    started = time.perf_counter()
    if tables.open(table) is None:
        raise ValueError(f"{table} has no live table to rebuild (nothing projected yet)")
    scratch = scratch_name(table)
    scratch_uri = f"{tables.root.rstrip('/')}/{scratch}"
    replay = Replayer(
        tables,
        table,
        f"{scratch_uri}/{table}",
        scratch_uri,
        run_id=run_id,
        batch_size=batch_size,
        progress=progress,
        write_live=True,
        engine=engine or DuckDBEngine(),
    )
    try:
        live, at = _settled(replay, tables.uri(table))
        result = compare(replay.shadow(), live, table, at)
        if not (result.equal or force):
            return RebuildReport(
                table, False, force, result, -1, -1, 0, replay.replayed, _since(started)
            )
        for attempt in range(1, MAX_ROUNDS + 1):
            live, at = _settled(replay, tables.uri(table))  # events since the compare
            hit(fault, "rebuild.before_swap")
            try:
                version = _swap(replay.shadow(), live, table, run_id)
            except CommitFailedError:
                continue  # a projection commit landed since the sync: sync again, swap again
            hit(fault, "rebuild.after_swap")
            return RebuildReport(
                table,
                True,
                force,
                result,
                version,
                version - 1,  # the table right before the swap: the rollback target
                attempt,
                replay.replayed,
                _since(started),
            )
        raise RuntimeError(f"{table} kept moving; could not swap the rebuild in")
    finally:
        delete_folder(tables.root, tables.storage_options, scratch)


def _settled(replay: Replayer, uri: str) -> tuple[DeltaTable, int]:
    """:meth:`Replayer.sync`, retried while the live snapshot holds a silver step's append of new
    keys without its MERGE (:func:`_mid_step`): such a snapshot is not the table at any
    checkpoint, so it is neither compared nor swapped over."""
    for _ in range(MAX_ROUNDS):
        live, at = replay.sync(uri)
        if not _mid_step(live, replay.table):
            return live, at
        time.sleep(MID_STEP_WAIT)  # the step's MERGE is due
    raise RuntimeError(
        f"{replay.table} holds appended rows without their MERGE (a projection step stopped "
        "between the two commits?): run the projection once, then again"
    )


def _since(started: float) -> float:
    return time.perf_counter() - started


def checkpoint_app_ids(table: str) -> tuple[str, ...]:
    """Every txn app id a projection commits on ``table``."""
    return (seq_app_id(table), enqueued_app_id(table), appended_app_id(table))


def _overwrite(
    live: DeltaTable, rows: pa.Table, table: str, points: dict[str, int], run_id: str, op: str
) -> int:
    """Replace every row of ``live`` (the snapshot it was loaded at) by ``rows`` with ``points``
    in the same commit; raises CommitFailedError when a commit carrying any of those app ids
    (or touching the table) landed after that snapshot. Returns the new commit's version."""
    write_deltalake(
        live,
        rows.select(SCHEMAS[table].names).cast(SCHEMAS[table]),
        mode="overwrite",
        partition_by=PARTITION_BY.get(table),
        writer_properties=writer_properties(table),
        commit_properties=commit_props(points, f"{run_id}", op),
    )
    live.update_incremental()
    for entry in live.history(MAX_ROUNDS):
        if entry.get("cqrs.run_id") == run_id and entry.get("cqrs.operation") == op:
            return int(entry["version"])
    return int(live.version())  # pragma: no cover - the commit just succeeded


def _mid_step(live: DeltaTable, table: str) -> bool:
    """Whether a silver step's append of new keys (``appended_seq``, its batch's checkpoint) is
    committed on ``live`` and its MERGE (which moves ``ingest_seq`` there) is not yet: swapping
    now would drop the appended rows while the MERGE, planned after the swap, still commits."""
    return txn(live, appended_app_id(table)) > txn(live, seq_app_id(table))


def _swap(shadow: DeltaTable, live: DeltaTable, table: str, run_id: str) -> int:
    """The swap: the shadow's rows into the live table, the live snapshot's checkpoints kept.

    Silver tables always get ``appended_seq`` too (at least the checkpoint), so a step's append
    of new keys planned before the swap conflicts with it like its MERGE would."""
    points = {app: v for app in checkpoint_app_ids(table) if (v := txn(live, app)) >= 0}
    if table in SPECS and seq_app_id(table) in points:
        appended = appended_app_id(table)
        points[appended] = max(points.get(appended, -1), points[seq_app_id(table)])
    return _overwrite(live, shadow.to_pyarrow_table(), table, points, run_id, SWAP)


def last_swap(tables: TableStore, table: str) -> int:
    """The version of the live table's newest rebuild swap commit (ValueError: none)."""
    live = tables.open(table)
    if live is not None:
        for entry in live.history():
            if entry.get("cqrs.operation") == SWAP:
                return int(entry["version"])
    raise ValueError(f"{table} has no rebuild to roll back")


def rollback(tables: TableStore, table: str, *, run_id: str, to_version: int | None = None) -> int:
    """Time travel: put the rows AND checkpoints of ``to_version`` (default: the version right
    before the last rebuild swap) back into the live table in one commit, guarded like the swap.
    The projection then re-applies every event after that checkpoint (idempotent: silver MERGEs
    are version-guarded, gold is rebuilt from silver). Returns the rollback commit's version.

    (``DeltaTable.restore(version)`` restores the rows but not the txn checkpoints, which keep
    their newest values, so events applied after ``version`` would be lost: do not use it.)"""
    target = last_swap(tables, table) - 1 if to_version is None else to_version
    uri = tables.uri(table)
    old = DeltaTable(uri, version=target, storage_options=tables.storage_options)
    points = {app: v for app in checkpoint_app_ids(table) if (v := txn(old, app)) >= 0}
    rows = old.to_pyarrow_table()
    for _ in range(MAX_ROUNDS):
        live = DeltaTable(uri, storage_options=tables.storage_options)
        try:
            return _overwrite(live, rows, table, points, f"rollback:{run_id}", ROLLBACK)
        except CommitFailedError:
            continue
    raise RuntimeError(f"could not roll {table} back")


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
        live, at = _settled(replay, tables.uri(table))
        result = compare(replay.shadow(), live, table, at)
    finally:
        delete_folder(scratch_root, tables.storage_options, folder)
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
        "version": report.version,
        "previous_version": report.previous_version,
        "swap_attempts": report.swap_attempts,
        "events_replayed": report.events_replayed,
        "seconds": round(report.seconds, 3),
    }
