"""The dead_letter_events table: poison events with their reason, written idempotently.

A dead letter's key is ``"<stage>:<partition>:<sequence_number>"`` (the event's bus position), so
re-running a crashed step never writes it twice. Re-applying them is :mod:`.redrive`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties

from .context import Clock, utc_now
from .schemas import DEAD_LETTER_EVENTS, DEAD_LETTER_EVENTS_SCHEMA
from .tables import TableStore


@dataclass(frozen=True)
class DeadLetter:
    """A poison event at a bus position, and why it could not be applied."""

    stage: str
    partition: int
    sequence_number: int
    event_id: str | None
    event_type: str | None
    body: str
    reason: str

    @property
    def dead_letter_id(self) -> str:
        return f"{self.stage}:{self.partition}:{self.sequence_number}"


def write_dead_letters(
    tables: TableStore,
    letters: Sequence[DeadLetter],
    *,
    run_id: str,
    clock: Clock = utc_now,
) -> int:
    """Insert dead letters whose id is not in the table yet; returns how many were new."""
    if not letters:
        return 0
    unique = {d.dead_letter_id: d for d in letters}
    now = clock()
    rows = pa.Table.from_pylist(
        [
            {
                "dead_letter_id": key,
                "stage": d.stage,
                "partition": d.partition,
                "sequence_number": d.sequence_number,
                "event_id": d.event_id,
                "event_type": d.event_type,
                "body": d.body,
                "reason": d.reason,
                "run_id": run_id,
                "dead_lettered_at": now,
                "resolved": False,
                "resolved_at": None,
            }
            for key, d in unique.items()
        ],
        schema=DEAD_LETTER_EVENTS_SCHEMA,
    )
    table = tables.ensure(DEAD_LETTER_EVENTS)
    metrics = (
        table.merge(
            rows,
            "t.dead_letter_id = s.dead_letter_id",
            source_alias="s",
            target_alias="t",
            streamed_exec=False,
            commit_properties=CommitProperties(
                custom_metadata={"cqrs.run_id": run_id, "cqrs.operation": "dead_letter"}
            ),
        )
        .when_not_matched_insert_all()
        .execute()
    )
    return int(metrics.get("num_target_rows_inserted", 0))


def read_dead_letters(
    tables: TableStore, *, stage: str | None = None, unresolved_only: bool = False
) -> pa.Table:
    """Dead letters (optionally of one stage / only unresolved), ordered by stage and position."""
    table = tables.open(DEAD_LETTER_EVENTS)
    if table is None:
        return DEAD_LETTER_EVENTS_SCHEMA.empty_table()
    data = table.to_pyarrow_table()
    if stage is not None:
        data = data.filter(pc.field("stage") == stage)
    if unresolved_only:
        data = data.filter(~pc.field("resolved"))
    return data.sort_by(
        [("stage", "ascending"), ("partition", "ascending"), ("sequence_number", "ascending")]
    )


def resolve_dead_letters(
    tables: TableStore, ids: Sequence[str], *, run_id: str, clock: Clock = utc_now
) -> int:
    """Mark dead letters resolved (idempotent); returns how many changed."""
    table = tables.open(DEAD_LETTER_EVENTS)
    if table is None or not ids:
        return 0
    now: datetime = clock()
    source = pa.table(
        {
            "dead_letter_id": pa.array(sorted(set(ids)), pa.string()),
            "resolved_at": [now] * len(set(ids)),
        },
        schema=pa.schema(
            [("dead_letter_id", pa.string()), DEAD_LETTER_EVENTS_SCHEMA.field("resolved_at")]
        ),
    )
    metrics = (
        table.merge(
            source,
            "t.dead_letter_id = s.dead_letter_id",
            source_alias="s",
            target_alias="t",
            streamed_exec=False,
            commit_properties=CommitProperties(
                custom_metadata={"cqrs.run_id": run_id, "cqrs.operation": "resolve_dead_letters"}
            ),
        )
        .when_matched_update(
            updates={"resolved": "true", "resolved_at": "s.resolved_at"},
            predicate="t.resolved = false",
        )
        .execute()
    )
    return int(metrics.get("num_target_rows_updated", 0))
