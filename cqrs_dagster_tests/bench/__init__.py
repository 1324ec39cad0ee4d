"""Benchmarks (``make bench`` / ``python -m cqrs_dagster_tests.bench``). Not tests: no asserts.

Each benchmark is a module in this package with a ``run(repetitions) -> Report`` function, listed
in ``__main__.BENCHMARKS``. A :class:`Report` holds throughput measurements (one value per
repetition; the median is what is reported) and ratios between them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Measurement:
    """Throughput of one scenario, one value per repetition."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def line(self) -> str:
        spread = f"min {min(self.values):,.0f}, max {max(self.values):,.0f}"
        return (
            f"  {self.name:<46} {self.median:>10,.0f} {self.unit}"
            f"   (median of {len(self.values)}; {spread})"
        )


@dataclass
class Report:
    title: str
    notes: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[tuple[str, str]] = field(default_factory=list)  # (numerator, denominator) names

    def get(self, name: str) -> Measurement:
        return next(m for m in self.measurements if m.name == name)

    def render(self) -> str:
        lines = [self.title, *(f"  ({n})" for n in self.notes)]
        lines += [m.line() for m in self.measurements]
        for top, bottom in self.ratios:
            ratio = self.get(top).median / self.get(bottom).median
            lines.append(f"  ratio {top} / {bottom}: {ratio:.2f}")
        return "\n".join(lines)
