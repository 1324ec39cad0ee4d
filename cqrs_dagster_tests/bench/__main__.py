"""``python -m cqrs_dagster_tests.bench [NAME ...] [--repetitions N]``: run benchmarks, print medians.

Add a benchmark by writing a module in this package with ``run(repetitions) -> Report`` (or a
``main()`` that prints its own medians) and listing it in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

# name -> module under cqrs_dagster_tests.bench, in run order.
BENCHMARKS: dict[str, str] = {
    "write_side": "cqrs_dagster_tests.bench.write_side",
    "end_to_end": "cqrs_dagster_tests.bench.end_to_end",
    "read_side": "cqrs_dagster_tests.bench.read_side",
    "rebuild": "cqrs_dagster_tests.bench.rebuild",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cqrs_dagster_tests.bench")
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        start = time.perf_counter()
        if hasattr(module, "run"):
            print(module.run(args.repetitions).render())
        else:  # modules that print their own medians
            module.main()
        print(f"  [{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
