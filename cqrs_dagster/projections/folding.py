"""The version-guarded fold shared by the silver projections. Pure: no I/O.

Events are grouped per aggregate (first-seen order) and applied in version order. An event whose
version is not above the row's is skipped (a duplicate or an older event never overwrites newer
state); an event the projection cannot apply becomes a :class:`FoldError` and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cqrs_dagster.domain.events import EventEnvelope

Row = dict[str, Any]
# apply(row or None, event) -> new row; raises to reject the event.
Apply = Callable[[Row | None, EventEnvelope], Row]


@dataclass(frozen=True)
class FoldError:
    """An event the fold could not apply, and why (it becomes a dead letter)."""

    event: EventEnvelope
    reason: str


class FoldResult(NamedTuple):
    """Changed rows by key, and how many events were applied, skipped and rejected."""

    rows: dict[str, Row]
    applied: int
    skipped: int
    errors: list[FoldError]


def fold(
    current: Mapping[str, Row],
    events: Sequence[EventEnvelope],
    apply: Apply,
) -> FoldResult:
    """Apply ``events`` on top of ``current`` rows (keyed by aggregate id)."""
    by_key: dict[str, list[EventEnvelope]] = {}
    for event in events:
        by_key.setdefault(event.aggregate_id, []).append(event)
    rows: dict[str, Row] = {}
    applied = skipped = 0
    errors: list[FoldError] = []
    for key, stream in by_key.items():
        row = current.get(key)
        changed = False
        for event in sorted(stream, key=lambda e: e.version):
            if row is not None and event.version <= int(row["version"]):
                skipped += 1
                continue
            try:
                new = apply(row, event)
            except Exception as exc:  # a bad event or a bug: dead-letter it, keep going
                errors.append(FoldError(event, f"{type(exc).__name__}: {exc}"))
                continue
            row, changed = new, True
            applied += 1
        if changed and row is not None:
            rows[key] = row
    return FoldResult(rows, applied, skipped, errors)
