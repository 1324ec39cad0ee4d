"""What every projection step runs with: the tables, the engine, the run, and the test hooks.

``fault`` and ``clock`` are hooks for the exactly-once tests: ``fault(point)`` is called at each
named point of a step (a test raises or SIGKILLs there), ``clock`` stamps ingest and dead-letter
times (a test fixes it so two runs can be compared row for row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from deltalake import DeltaTable

from .engine import ProjectionEngine
from .engines import DuckDBEngine
from .recent_raw import RecentRaw
from .tables import TableStore

Fault = Callable[[str], None] | None
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def hit(fault: Fault, point: str) -> None:
    """Call ``fault(point)`` at a named point of a step (a no-op outside tests)."""
    if fault is not None:
        fault(point)


@dataclass(frozen=True)
class StepContext:
    """The read store, the engine that computes, the run that commits, and the test hooks."""

    tables: TableStore
    run_id: str
    engine: ProjectionEngine = field(default_factory=DuckDBEngine)
    fault: Fault = None
    clock: Clock = utc_now
    #: raw_events rows this context committed last, for the steps after it (see recent_raw)
    recent: RecentRaw = field(default_factory=RecentRaw, compare=False, repr=False)
    #: raw_events as this context's bronze step left it, by table URI: the next raw commit
    #: brings it up to date (new log entries only) instead of opening the table again
    bronze: dict[str, DeltaTable] = field(default_factory=dict, compare=False, repr=False)

    def hit(self, point: str) -> None:
        hit(self.fault, point)

    def on(self, tables: TableStore) -> StepContext:
        """The same run, engine and hooks over other tables (a rebuild's shadow copies)."""
        return replace(self, tables=tables)
