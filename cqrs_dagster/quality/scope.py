"""What one projection run committed to raw_events, so in-run checks read only that.

Every projection commit carries ``cqrs.run_id`` in its Delta commit info; the ingest_seq
checkpoint before the run's first commit and after its last bound the rows the run appended.
A blocking check inside a projection run then costs what the run's batch costs, not what the
whole table costs; scheduled audits still read everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import DeltaTable

from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.delta_io import read_raw_range, scan, seq_app_id, txn
from cqrs_dagster.projections.recent_raw import RecentRaw
from cqrs_dagster.projections.tables import TableStore

HISTORY_DEPTH = 500  # commits searched for the run's own


@dataclass(frozen=True)
class RunScope:
    """raw_events rows with ``after_seq < ingest_seq <= upto_seq``; ``recent``: the rows the
    projection that committed them still holds (a pass's checks read them from memory)."""

    after_seq: int
    upto_seq: int
    recent: RecentRaw | None = field(default=None, compare=False, repr=False)


def raw_scope_of_run(tables: TableStore, run_id: str) -> RunScope | None:
    """The ingest_seq range ``run_id`` appended to raw_events; None if it committed nothing."""
    table = tables.open(schemas.RAW_EVENTS)
    if table is None:
        return None
    versions = [
        int(h["version"])
        for h in table.history(HISTORY_DEPTH)
        if h.get("cqrs.run_id") == run_id and "version" in h
    ]
    if not versions:
        return None
    app = seq_app_id(schemas.RAW_EVENTS)
    before = DeltaTable(
        tables.uri(schemas.RAW_EVENTS),
        version=min(versions) - 1,
        storage_options=tables.storage_options,
    )
    after = DeltaTable(
        tables.uri(schemas.RAW_EVENTS),
        version=max(versions),
        storage_options=tables.storage_options,
    )
    return RunScope(after_seq=txn(before, app), upto_seq=txn(after, app))


def raw_rows(tables: TableStore, scope: RunScope, columns: list[str]) -> pa.Table:
    """The raw_events rows of a scope (from ``scope.recent`` when it holds them, else files
    pruned on ingest_seq statistics)."""
    table = tables.open(schemas.RAW_EVENTS)
    if table is None:
        return schemas.RAW_EVENTS_SCHEMA.empty_table().select(sorted({*columns, "ingest_seq"}))
    return read_raw_range(table, scope.after_seq, scope.upto_seq, columns, recent=scope.recent)


def raw_rows_on_dates(
    tables: TableStore,
    dates: list[object],
    columns: list[str],
    id_range: tuple[str, str] | None = None,
) -> pa.Table:
    """The raw_events rows of the given event_date partitions (partition-pruned) and, with
    ``id_range``, only of the files whose event_id range overlaps it: a superset of the rows
    with an id in that range, so a batch's duplicates are all found (ids are time-ordered, so
    a live batch reads the recent files of the day, not the whole day; raw ingest prunes the
    same way)."""
    table = tables.open(schemas.RAW_EVENTS)
    wanted = sorted({*columns, "event_date"})
    if table is None or not dates:
        return schemas.RAW_EVENTS_SCHEMA.empty_table().select(wanted)
    prune: list[tuple[str, str, object]] = [("event_date", "in", dates)]
    if id_range is not None:
        prune += [("event_id", ">=", id_range[0]), ("event_id", "<=", id_range[1])]
    return scan(table, prune, None, wanted)
