"""The Delta committer, shared by every engine: rows and the table's checkpoint in ONE commit.

A checkpoint is a set of Delta txn actions (``app_id -> version``) committed in the same commit as
the rows they cover, so a crash either loses both or keeps both, and a replayed batch finds its
checkpoint already there. Engines compute Arrow tables; only this module (and the dead-letter
table's own writer) writes the read models.

A commit whose answer was lost: storage can store a commit file and fail before answering (a
storage node killed, a connection reset). object_store retries the conditional PUT, finds the file
there, and Delta reports the commit as lost to a concurrent writer carrying the same txn app ids
("Concurrent transaction failed"), although that writer was this very commit. :func:`_committed`
re-reads the table: when it now holds exactly this commit's checkpoints, the commit (or an
identical one of the same batch) is in, rows and checkpoint together, and the step goes on
instead of failing the run. Any other conflict is raised as before.

A commit whose request failed in transport: object_store does not retry a conditional PUT
whose connection broke mid-request (deltalake raises ``OSError``: "Connection reset by peer"
while another table's commit killed the storage node, say). The commit file may or may not
be stored. :func:`_committed` re-reads the table (through the same patient retries, so it
waits out the outage): when it holds this commit's checkpoints the commit landed; when it does
not, nothing of it is in the log (a commit file is one atomic PUT), so the commit is run once
more from the start (its data files are written again; the orphans of the failed attempt are
never referenced, and VACUUM removes them). Only commits that carry checkpoints and whose rows
can be read again are retried; anything else, and a second failure, is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from .context import Fault, hit
from .delta_io import row_count, seq_app_id, txn
from .schemas import SCHEMAS
from .tables import PARTITION_BY, writer_properties

log = logging.getLogger(__name__)


def commit_props(checkpoints: Mapping[str, int], run_id: str, operation: str) -> CommitProperties:
    """Commit properties carrying the checkpoints (txn actions) and who wrote the commit."""
    return CommitProperties(
        custom_metadata={"cqrs.run_id": run_id, "cqrs.operation": operation},
        app_transactions=[Transaction(app, version) for app, version in checkpoints.items()],
    )


def _holds(table: DeltaTable, checkpoints: Mapping[str, int]) -> bool:
    """Whether ``table``, re-read, holds exactly ``checkpoints``."""
    table.update_incremental()
    return all(txn(table, app) == version for app, version in checkpoints.items())


def _committed(
    table: DeltaTable,
    checkpoints: Mapping[str, int],
    commit: Callable[[], object],
    *,
    repeatable: bool = True,
) -> None:
    """Run ``commit``. A "concurrent" failure, or a transport failure (``OSError``), after which
    ``table`` holds exactly ``checkpoints`` means this commit landed and its answer was lost; a
    transport failure after which it does not is retried once when ``repeatable`` (see the
    module docstring)."""
    try:
        commit()
    except CommitFailedError as exc:
        if not checkpoints or not _holds(table, checkpoints):
            raise
        _landed(table, checkpoints, exc)
    except OSError as exc:
        if not checkpoints:
            raise
        if _holds(table, checkpoints):
            _landed(table, checkpoints, exc)
            return
        if not repeatable:
            raise
        log.warning(
            "Delta commit on %s failed in transport (%s) and the table does not hold its "
            "checkpoints %s: nothing of it was committed; committing it again",
            table.table_uri,
            str(exc).splitlines()[-1].strip() if str(exc) else type(exc).__name__,
            dict(checkpoints),
        )
        commit()


def _landed(table: DeltaTable, checkpoints: Mapping[str, int], exc: Exception) -> None:
    log.warning(
        "Delta commit on %s reported %r, but the table holds its checkpoints %s: "
        "the commit landed and its answer was lost; continuing",
        table.table_uri,
        str(exc),
        dict(checkpoints),
    )


def commit_checkpoints_only(
    table: DeltaTable, name: str, checkpoints: Mapping[str, int], run_id: str, operation: str
) -> None:
    """A commit with no rows that moves checkpoints (a MERGE of nothing commits nothing)."""
    _committed(
        table,
        checkpoints,
        lambda: write_deltalake(
            table,
            SCHEMAS[name].empty_table(),
            mode="append",
            partition_by=PARTITION_BY.get(name),
            commit_properties=commit_props(checkpoints, run_id, operation),
        ),
    )


def append(
    table: DeltaTable,
    name: str,
    rows: pa.Table,
    checkpoints: Mapping[str, int],
    run_id: str,
    operation: str,
) -> None:
    """Append ``rows`` (cast to the table's schema) with ``checkpoints`` in the same commit."""
    _committed(
        table,
        checkpoints,
        lambda: write_deltalake(
            table,
            rows.cast(SCHEMAS[name]),
            mode="append",
            partition_by=PARTITION_BY.get(name),
            writer_properties=writer_properties(name),
            commit_properties=commit_props(checkpoints, run_id, operation),
        ),
    )
    table.update_incremental()


def overwrite(
    table: DeltaTable,
    rows: pa.Table | pa.RecordBatchReader,
    checkpoints: Mapping[str, int],
    run_id: str,
    operation: str,
    *,
    predicate: str | None = None,
) -> None:
    """Replace the table (or the rows ``predicate`` selects) by ``rows``, checkpoints included
    (a stream is written as it is read, in one commit)."""
    _committed(
        table,
        checkpoints,
        lambda: write_deltalake(
            table,
            rows,
            mode="overwrite",
            predicate=predicate,
            commit_properties=commit_props(checkpoints, run_id, operation),
        ),
        repeatable=isinstance(rows, pa.Table),  # a stream cannot be read twice
    )
    table.update_incremental()


def appended_app_id(table: str) -> str:
    """Txn app id of a silver table's append of new keys: the raw ``ingest_seq`` of its batch."""
    return f"{table}/appended_seq"


def merge_versioned(
    target: DeltaTable,
    name: str,
    key: str,
    rows: pa.Table,
    checkpoint: Mapping[str, int],
    run_id: str,
    operation: str,
    *,
    partition: str | None = None,
    existing: pa.Array | None = None,
    fault: Fault = None,
) -> None:
    """MERGE rows on ``key`` (newer version wins) with ``checkpoint`` in the same commit.

    With ``existing`` (the keys that have a row: the fold read them), rows of the other keys are
    APPENDED first, sorted by key, in a commit of their own: a MERGE rewrites every file it
    matches, and with inserts in it its output file grows with the table, so a catch-up would
    rewrite ever larger files. Appended in key order (time-ordered ids), new rows form narrow
    files that later MERGEs of recent keys prune to. Still exactly once: a crash between the two
    commits leaves the appended rows without the checkpoint; the re-run reads them as current
    rows, whose versions cover the batch's events for them, so they are skipped, not added
    again. The append carries its own txn app id (``<table>/appended_seq``), so a concurrent
    writer's append of the same batch conflicts like its MERGE would.
    """
    source = rows
    if existing is not None and source.num_rows:
        is_new = pc.invert(pc.is_in(source[key], existing))
        fresh = source.filter(is_new).sort_by(key)
        source = source.filter(pc.invert(is_new))
        if fresh.num_rows:
            seq = checkpoint.get(seq_app_id(name), -1)
            append(target, name, fresh, {appended_app_id(name): seq}, run_id, operation)
        hit(fault, f"{name}.after_append")
    if source.num_rows == 0:
        if checkpoint:
            commit_checkpoints_only(target, name, checkpoint, run_id, operation)
        return
    predicate = f"t.{key} = s.{key}"
    if partition is not None:
        days = sorted(pc.unique(source[partition]).to_pylist())
        listed = ", ".join(f"'{d.isoformat()}'" for d in days if isinstance(d, date))
        predicate += f" AND t.{partition} = s.{partition} AND t.{partition} IN ({listed})"
    _committed(
        target,
        checkpoint,
        lambda: (
            target.merge(
                source,
                predicate,
                source_alias="s",
                target_alias="t",
                writer_properties=writer_properties(name),
                streamed_exec=False,
                commit_properties=commit_props(checkpoint, run_id, operation),
            )
            .when_matched_update_all(predicate="s.version > t.version")
            .when_not_matched_insert_all()
            .execute()
        ),
    )
    # A MERGE whose guard rejected every row commits nothing: move the checkpoint on its own.
    target.update_incremental()
    if checkpoint and any(txn(target, app) != v for app, v in checkpoint.items()):
        commit_checkpoints_only(target, name, checkpoint, run_id, operation)


def upsert(
    target: DeltaTable,
    name: str,
    key: str,
    rows: pa.Table,
    checkpoint: Mapping[str, int],
    run_id: str,
    operation: str,
) -> None:
    """Replace the rows of ``rows``' keys and insert the others, ``checkpoint`` in the same
    commit (a plain append on the first build; a checkpoint-only commit when nothing changed)."""
    if rows.num_rows and row_count(target) == 0:  # first build: nothing to merge with
        append(target, name, rows, checkpoint, run_id, operation)
    elif rows.num_rows:
        _committed(
            target,
            checkpoint,
            lambda: (
                target.merge(
                    rows,
                    f"t.{key} = s.{key}",
                    source_alias="s",
                    target_alias="t",
                    writer_properties=writer_properties(name),
                    streamed_exec=False,
                    commit_properties=commit_props(checkpoint, run_id, operation),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            ),
        )
        target.update_incremental()
    if any(txn(target, app) != v for app, v in checkpoint.items()):
        commit_checkpoints_only(target, name, checkpoint, run_id, operation)
