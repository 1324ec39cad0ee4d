"""What one projection step did: the figures the Dagster layer logs as materialization metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class StepReport:
    """One step's outcome. ``checkpoint`` maps txn app ids to the versions committed with the rows.

    ``newest_applied_event_time`` is the newest bus *enqueued* time among the events the table
    has now applied (what projection lag is measured against).
    """

    table: str
    events_read: int
    events_applied: int
    duplicates_skipped: int
    dead_lettered: int
    rows_written: int
    checkpoint: dict[str, int] = field(default_factory=dict)
    delta_version: int | None = None
    row_count: int = 0
    newest_applied_event_time: datetime | None = None
    seconds: float = 0.0
