"""``python -m cqrs_bench [NAME ...] [--repetitions N]``: run benchmarks, print medians.

Writes ``bench/results/<name>.json`` and its plots for each benchmark run. Quick sizes by default;
``BENCH_FULL=1`` for the sizes the targets are stated for; ``BENCH_CPU_THIEF=0.3`` runs them on a
slower machine (busy processes take 30% of every core: ``cpu_thief.py``).

Add a benchmark by writing a module in this package with ``run(repetitions) -> Report`` and
listing it in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from . import full_mode
from .cpu_thief import cpu_thief, thief_share
from .results import write

# name -> module under cqrs_bench, in run order.
BENCHMARKS: dict[str, str] = {
    "write_side": "cqrs_bench.write_side",  # (a), (b)
    "catch_up": "cqrs_bench.catch_up",  # (c), (f)
    "read_side": "cqrs_bench.read_side",  # (d), (f)
    "rebuild": "cqrs_bench.rebuild",
    "query": "cqrs_bench.query",  # (g)
    "end_to_end": "cqrs_bench.end_to_end",  # (e), (f)
    "engines": "cqrs_bench.engines",  # issue 12: DuckDB vs Spark (Sail)
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cqrs_bench")
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--repetitions", type=int, default=None, help="default: 3 (5 full)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    repetitions = args.repetitions or (5 if full_mode() else 3)
    mode = "BENCH_FULL=1 " if full_mode() else ""
    share = thief_share()
    if share:
        mode += f"BENCH_CPU_THIEF={share:g} "
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        start = time.perf_counter()
        with cpu_thief(share) as thieves:
            report = module.run(repetitions)
        if thieves:
            report.notes.insert(
                0,
                f"BENCH_CPU_THIEF={share:g}: {len(thieves)} busy processes, each burning {share:.0%} of "
                "a core throughout (a slower CPU; the disk as quick as it was)",
            )
        if not report.command:
            report.command = (
                f"{mode}.venv/bin/python -m cqrs_bench {name} --repetitions {repetitions}"
            )
        print(report.render(), flush=True)
        for path in write(name, report):
            print(f"  wrote {path}")
        print(f"  [{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
