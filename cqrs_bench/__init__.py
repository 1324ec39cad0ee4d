"""Benchmarks (``make bench`` / ``python -m cqrs_bench``). Not tests: no asserts.

Each benchmark is a module in this package with a ``run(repetitions) -> Report`` function, listed
in ``__main__.BENCHMARKS``. A :class:`Report` holds measurements (one value per repetition; the
median is what is reported, with min-max), each optionally against a :class:`Target`, ratios
between measurements (peer ratios are measured in the same run), and :class:`Series` to plot.
``__main__`` writes every report as JSON plus PNG plots into ``bench/results/``.

Sizes: quick by default (``make bench`` finishes in minutes); ``BENCH_FULL=1`` runs the sizes the
targets are stated for. Modules read :func:`full_mode` and pick their sizes from it.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "bench" / "results"))


def full_mode() -> bool:
    """True under ``BENCH_FULL=1``: run the sizes the targets are stated for."""
    return os.environ.get("BENCH_FULL", "") not in ("", "0")


def sized(quick: int, full: int) -> int:
    """``full`` under ``BENCH_FULL=1``, else ``quick``."""
    return full if full_mode() else quick


@dataclass(frozen=True)
class Target:
    """``op value``: e.g. ``Target(">=", 15_000)`` for a rate, ``Target("<=", 50)`` for a p99."""

    op: Literal[">=", "<="]
    value: float

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:,.6g}"


@dataclass
class Measurement:
    """One figure of one scenario, one value per repetition (reported: the median)."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None
    key: str = ""  # the letter for it, e.g. "a", "c" (BENCHMARKS.md groups by it)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        return self.target.met(self.median)

    def line(self) -> str:
        if not self.values:
            return f"  {self.name:<52} (no value)"
        spread = f"min {min(self.values):,.4g}, max {max(self.values):,.4g}"
        verdict = ""
        if self.target is not None:
            verdict = f"  target {self.target} {self.unit}: {'MET' if self.met else 'MISSED'}"
        return (
            f"  {self.name:<52} {self.median:>12,.4g} {self.unit}"
            f"   (median of {len(self.values)}; {spread}){verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = None if self.target is None else str(self.target)
        if self.values:
            out.update(median=self.median, min=min(self.values), max=max(self.values))
        out["met"] = self.met
        return out


@dataclass
class Ratio:
    """``numerator / denominator`` of two measurements' medians (same run)."""

    numerator: str
    denominator: str
    target: Target | None = None
    key: str = ""


@dataclass
class Series:
    """A plot: named lines of (x, y) points, written as ``<report>-<name>.png``."""

    name: str
    title: str
    x_label: str
    y_label: str
    lines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    style: Literal["line", "scatter"] = "line"
    log_x: bool = False
    hlines: dict[str, float] = field(default_factory=dict)  # label -> y (targets)


@dataclass
class Report:
    title: str
    notes: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio | tuple[str, str]] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # paths (relative to ROOT) of profiles
    command: str = ""  # how to reproduce (filled in by __main__ when empty)

    def get(self, name: str) -> Measurement:
        return next(m for m in self.measurements if m.name == name)

    def _ratios(self) -> list[Ratio]:
        return [r if isinstance(r, Ratio) else Ratio(*r) for r in self.ratios]

    def ratio_value(self, ratio: Ratio) -> float | None:
        top, bottom = self.get(ratio.numerator), self.get(ratio.denominator)
        if not top.values or not bottom.values or bottom.median == 0:
            return None
        return top.median / bottom.median

    def render(self) -> str:
        lines = [self.title, *(f"  ({n})" for n in self.notes)]
        lines += [m.line() for m in self.measurements]
        for ratio in self._ratios():
            value = self.ratio_value(ratio)
            text = "n/a" if value is None else f"{value:.2f}"
            if ratio.target is not None and value is not None:
                text += f"  target {ratio.target}: {'MET' if ratio.target.met(value) else 'MISSED'}"
            lines.append(f"  ratio {ratio.numerator} / {ratio.denominator}: {text}")
        lines += [f"  profile: {p}" for p in self.profiles]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        ratios = []
        for ratio in self._ratios():
            value = self.ratio_value(ratio)
            ratios.append(
                {
                    "numerator": ratio.numerator,
                    "denominator": ratio.denominator,
                    "key": ratio.key,
                    "value": value,
                    "target": None if ratio.target is None else str(ratio.target),
                    "met": None
                    if ratio.target is None or value is None
                    else ratio.target.met(value),
                }
            )
        return {
            "title": self.title,
            "command": self.command,
            "notes": self.notes,
            "measurements": [m.as_dict() for m in self.measurements],
            "ratios": ratios,
            "series": [asdict(s) for s in self.series],
            "profiles": self.profiles,
        }


@contextmanager
def profiled(name: str, *, interval: float = 0.001) -> Iterator[None]:
    """Profile the block with pyinstrument; the text report goes to results/profiles/<name>.txt."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        out = RESULTS_DIR / "profiles" / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
