"""Redrive: re-apply unresolved silver dead letters through the current folds, then mark those
that now apply (or are covered by a newer row version) as resolved."""

from __future__ import annotations

from collections.abc import Sequence

from .context import Clock, Fault, hit, utc_now
from .dead_letters import read_dead_letters, resolve_dead_letters
from .schemas import CUSTOMERS, ORDERS
from .silver import reapply
from .tables import TableStore


def redrive(
    tables: TableStore,
    *,
    run_id: str,
    stages: Sequence[str] = (ORDERS, CUSTOMERS),
    fault: Fault = None,
    clock: Clock = utc_now,
) -> dict[str, int]:
    """Re-apply unresolved silver dead letters through the current folds; returns resolved per stage.

    A dead letter is resolved when its event now applies, or is already covered by a newer row
    version. Rows are merged first, then the letters are marked: a crash in between is harmless
    (the re-run finds the events covered and resolves them).
    """
    resolved: dict[str, int] = {}
    for stage in stages:
        letters = read_dead_letters(tables, stage=stage, unresolved_only=True)
        ok_ids = reapply(tables, stage, letters.to_pylist(), run_id=run_id)
        hit(fault, f"redrive.{stage}.before_resolve")
        resolved[stage] = resolve_dead_letters(tables, ok_ids, run_id=run_id, clock=clock)
    return resolved
