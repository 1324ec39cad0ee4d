"""Silver writers: raw_events -> orders / customers by version-guarded MERGE, exactly once.

A run reads the raw events past the table's checkpoint (``<table>/ingest_seq``, at most
``max_events`` positions), reads the current rows of the keys they touch, folds, dead-letters the
events the fold rejects, then MERGEs the changed rows with the new checkpoint in the same commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from cqrs_dagster.domain.events import EventEnvelope

from .commit import merge_versioned
from .context import Fault, StepContext
from .customers import EVENT_TYPES as CUSTOMER_EVENTS
from .customers import fold_customers
from .dead_letters import DeadLetter, write_dead_letters
from .delta_io import (
    enqueued_app_id,
    from_micros,
    in_ingest_order,
    isin,
    read_raw_range,
    release_memory,
    row_count,
    scan,
    seq_app_id,
    to_micros,
    txn,
)
from .engine import ProjectionEngine
from .folding import FoldResult, Row
from .orders import EVENT_TYPES as ORDER_EVENTS
from .orders import fold_orders
from .report import StepReport
from .schemas import CUSTOMERS, ORDERS, RAW_EVENTS, SCHEMAS
from .tables import TableStore


@dataclass(frozen=True)
class SilverSpec:
    """What distinguishes one silver table: its key, events, the reference (Python) fold and
    partition column. The engine folds the clean keys; ``fold`` the rest."""

    table: str
    key: str
    event_types: frozenset[str]
    fold: Callable[[Mapping[str, Row], Sequence[EventEnvelope]], FoldResult]
    partition: str | None = None


SPECS: dict[str, SilverSpec] = {
    ORDERS: SilverSpec(ORDERS, "order_id", ORDER_EVENTS, fold_orders, "created_day"),
    CUSTOMERS: SilverSpec(CUSTOMERS, "customer_id", CUSTOMER_EVENTS, fold_customers),
}


# What a silver step reads of raw_events: the envelope, its bus position (dead letters) and the
# enqueued time (lag), not ``offset`` / ``ingested_at`` / ``event_date``.
RAW_COLUMNS = [
    "event_id",
    "event_type",
    "aggregate_id",
    "aggregate_type",
    "version",
    "event_timestamp",
    "correlation_id",
    "causation_id",
    "data",
    "metadata",
    "schema_version",
    "partition",
    "sequence_number",
    "enqueued_time",
]


def envelope_from_raw(row: Mapping[str, Any]) -> EventEnvelope:
    """Rebuild the event envelope from a raw_events row."""
    return EventEnvelope(
        event_id=row["event_id"],
        event_type=row["event_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_type=row["aggregate_type"],
        version=int(row["version"]),
        timestamp=row["event_timestamp"],
        correlation_id=row["correlation_id"] or "",
        causation_id=row["causation_id"] or "",
        data=orjson.loads(row["data"]),
        metadata=orjson.loads(row["metadata"] or "{}"),
        schema_version=int(row["schema_version"]),
    )


def current_table(target: DeltaTable, spec: SilverSpec, keys: Sequence[str]) -> pa.Table:
    """The table's rows for ``keys`` (Arrow)."""
    if not keys:
        return SCHEMAS[spec.table].empty_table()
    # Prune files on the keys' min/max (time-ordered ids keep recent keys in few files); a
    # 10k-value IN list makes the log replay itself slow.
    prune = [(spec.key, ">=", min(keys)), (spec.key, "<=", max(keys))]
    return scan(target, prune, isin(spec.key, keys))


def current_rows(target: DeltaTable, spec: SilverSpec, keys: Sequence[str]) -> dict[str, Row]:
    """The table's rows for ``keys``."""
    return {r[spec.key]: r for r in current_table(target, spec, keys).to_pylist()}


def fold_batch(
    spec: SilverSpec, engine: ProjectionEngine, mine: pa.Table, current: pa.Table
) -> tuple[list[pa.Table], FoldResult, list[Row]]:
    """Fold a batch of raw rows: clean keys by the engine, the others through the Python fold.

    Returns the engine's rows, the Python fold's result and the raw rows it folded.
    """
    fast: list[pa.Table] = []
    fast_applied = 0
    slow = mine
    if mine.num_rows:
        rows, fast_applied, others = engine.fold(spec.table, mine, current)
        fast.append(rows)
        slow = mine.filter(pc.is_in(mine["aggregate_id"], others))
        current = current.filter(pc.is_in(current[spec.key], others))
    raw_rows = slow.to_pylist()
    result = spec.fold(
        {r[spec.key]: r for r in current.to_pylist()}, [envelope_from_raw(r) for r in raw_rows]
    )
    merged = FoldResult(result.rows, result.applied + fast_applied, result.skipped, result.errors)
    return fast, merged, raw_rows


def merge_rows(
    target: DeltaTable,
    spec: SilverSpec,
    rows: pa.Table,
    checkpoint: Mapping[str, int],
    run_id: str,
    operation: str,
    *,
    existing: pa.Array | None = None,
    fault: Fault = None,
) -> None:
    """The committer's version-guarded MERGE with this table's key and partition."""
    merge_versioned(
        target,
        spec.table,
        spec.key,
        rows,
        checkpoint,
        run_id,
        operation,
        partition=spec.partition,
        existing=existing,
        fault=fault,
    )


def project(
    spec: SilverSpec, ctx: StepContext, *, max_events: int, until: int | None = None
) -> StepReport:
    """One incremental, exactly-once step of a silver table: at most ``max_events`` raw
    positions, none past ``until`` (raw_events' ``ingest_seq``; default its last)."""
    started = time.perf_counter()
    target = ctx.tables.ensure(spec.table)
    ctx.hit(f"{spec.table}.before_read")
    raw = ctx.tables.open(RAW_EVENTS)
    after = txn(target, seq_app_id(spec.table))
    newest_us = txn(target, enqueued_app_id(spec.table))
    raw_last = txn(raw, seq_app_id(RAW_EVENTS))
    if raw is None or raw_last <= after:
        return _report(spec.table, target, after, newest_us, started)
    upto = min(after + max_events, raw_last if until is None else min(raw_last, until))
    if upto <= after:
        return _report(spec.table, target, after, newest_us, started)
    batch = read_raw_range(raw, after, upto, RAW_COLUMNS, ordered=False, recent=ctx.recent)
    if batch.num_rows:
        newest_us = max(newest_us, to_micros(pc.max(batch["enqueued_time"]).as_py()))
    types = pa.array(sorted(spec.event_types))
    mine = in_ingest_order(batch.filter(pc.is_in(batch["event_type"], types)))
    keys = pc.unique(mine["aggregate_id"]).to_pylist()
    current = current_table(target, spec, keys)
    fast, result, raw_rows = fold_batch(spec, ctx.engine, mine, current)

    where = {r["event_id"]: r for r in raw_rows}
    letters = [
        DeadLetter(
            spec.table,
            int(where[err.event.event_id]["partition"]),
            int(where[err.event.event_id]["sequence_number"]),
            err.event.event_id,
            err.event.event_type,
            err.event.to_json().decode(),
            err.reason,
        )
        for err in result.errors
    ]
    ctx.hit(f"{spec.table}.before_dead_letters")
    write_dead_letters(ctx.tables, letters, run_id=ctx.run_id, clock=ctx.clock)
    checkpoint = {seq_app_id(spec.table): upto, enqueued_app_id(spec.table): newest_us}
    ctx.hit(f"{spec.table}.before_merge")
    rows = pa.concat_tables(
        [*fast, pa.Table.from_pylist(list(result.rows.values()), schema=SCHEMAS[spec.table])]
    )
    merge_rows(
        target,
        spec,
        rows,
        checkpoint,
        ctx.run_id,
        f"project_{spec.table}",
        existing=current[spec.key],
        fault=ctx.fault,
    )
    ctx.hit(f"{spec.table}.after_merge")
    return _report(
        spec.table,
        target,
        upto,
        newest_us,
        started,
        events_read=mine.num_rows,
        applied=result.applied,
        skipped=result.skipped,
        dead=len(letters),
        written=rows.num_rows,
    )


def _report(
    name: str,
    target: DeltaTable,
    seq: int,
    newest_us: int,
    started: float,
    *,
    events_read: int = 0,
    applied: int = 0,
    skipped: int = 0,
    dead: int = 0,
    written: int = 0,
) -> StepReport:
    release_memory()
    target.update_incremental()
    return StepReport(
        table=name,
        events_read=events_read,
        events_applied=applied,
        duplicates_skipped=skipped,
        dead_lettered=dead,
        rows_written=written,
        checkpoint={seq_app_id(name): seq, enqueued_app_id(name): newest_us},
        delta_version=target.version(),
        row_count=row_count(target),
        newest_applied_event_time=from_micros(newest_us),
        seconds=time.perf_counter() - started,
    )


def project_orders(ctx: StepContext, *, max_events: int, until: int | None = None) -> StepReport:
    """Apply new Order events from raw_events to ``orders``."""
    return project(SPECS[ORDERS], ctx, max_events=max_events, until=until)


def project_customers(ctx: StepContext, *, max_events: int, until: int | None = None) -> StepReport:
    """Apply new Customer events from raw_events to ``customers``."""
    return project(SPECS[CUSTOMERS], ctx, max_events=max_events, until=until)


def reapply(
    tables: TableStore, stage: str, letters: Sequence[Mapping[str, Any]], *, run_id: str
) -> list[str]:
    """Re-fold dead-lettered events of a silver stage; returns the ids that now apply or are covered."""
    spec = SPECS.get(stage)
    if spec is None or not letters:
        return []
    target = tables.ensure(spec.table)
    by_event: dict[str, str] = {}
    events: list[EventEnvelope] = []
    for letter in letters:
        try:
            event = EventEnvelope.from_json(letter["body"])
        except ValueError:
            continue
        by_event[event.event_id] = letter["dead_letter_id"]
        events.append(event)
    keys = list(dict.fromkeys(e.aggregate_id for e in events))
    result = spec.fold(current_rows(target, spec, keys), events)
    rows = pa.Table.from_pylist(list(result.rows.values()), schema=SCHEMAS[spec.table])
    merge_rows(target, spec, rows, {}, run_id, f"redrive_{spec.table}")
    failed = {err.event.event_id for err in result.errors}
    return [by_event[e.event_id] for e in events if e.event_id not in failed]
