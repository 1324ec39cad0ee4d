"""The result of one quality rule, with the figures reported as check metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_FEW = 10


@dataclass(frozen=True)
class CheckOutcome:
    """``passed`` plus figures; ``offending`` holds the first few offending ids."""

    passed: bool
    summary: str
    figures: dict[str, int | float | str] = field(default_factory=dict)
    offending: list[str] = field(default_factory=list)
