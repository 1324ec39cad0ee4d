"""A slower machine on demand: ``BENCH_CPU_THIEF=<share>`` keeps one busy process per core that
burns ``share`` of every 10 ms (0 < share < 1) for as long as a benchmark runs.

The machine's pace varies from day to day (the bare SQLite FULL commit has measured 4,089 to
6,532 commits/s on these 2 cores), and a target that holds only on a quick day is not shown to
hold. A thief takes a fixed share of each core from everything else, so a run can be repeated
on a slower machine whenever it is wanted. It emulates a slower CPU only: the disk's fsync is as
quick as the machine's. Each process runs in its own process group and is stopped by it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cqrs_dagster_tests.fixtures.procs import stop_group

PERIOD_SECONDS = 0.01

_BUSY = """
import sys, time
share, period = float(sys.argv[1]), float(sys.argv[2])
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < share * period:
        pass
    time.sleep(period * (1 - share))
"""


def thief_share() -> float:
    """``BENCH_CPU_THIEF``: the share of each core to take (default 0: none)."""
    raw = os.environ.get("BENCH_CPU_THIEF", "").strip()
    share = float(raw) if raw else 0.0
    if not 0 <= share < 1:
        raise ValueError(f"BENCH_CPU_THIEF must be in [0, 1), got {raw!r}")
    return share


@contextmanager
def cpu_thief(share: float) -> Iterator[list[int]]:
    """One busy process per core, each burning ``share`` of every period; yields their PIDs.
    ``share`` 0 starts none."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if share > 0:
            for _ in range(os.cpu_count() or 1):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _BUSY, str(share), str(PERIOD_SECONDS)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            stop_group(proc)
