# Issue 14 experiment: how regularly a kept `cqrs up` (the end-to-end benchmark's BENCH_E2E_KEEP
# folder) applied events. For each following pass that applied events, in time order across
# runs: when it began (`pass_started_at`; before that metadata, its first materialization), the
# time from the previous pass's beginning, and how long it took (`pass_seconds`; before, the
# slowest table's seconds). Prints the medians and every pass that began more than LONG seconds
# after the previous one or took more than SLOW seconds, with each table's seconds.
# Run:
#   BENCH_CPU_THIEF=0.45 BENCH_FULL=1 BENCH_E2E_PAIRS=1 BENCH_E2E_HIGH_RATE=0 \
#   BENCH_E2E_PER_BATCH=0 BENCH_E2E_KEEP=/tmp/keep .venv/bin/python -m cqrs_bench end_to_end
#   .venv/bin/python bench/experiments/pass_gaps.py /tmp/keep/*/*/data/dagster 2>/dev/null
import statistics
import sys
from itertools import pairwise
from typing import Any

import dagster as dg

LONG, SLOW = 3.6, 1.0

for home in sys.argv[1:]:
    with dg.DagsterInstance.from_config(home) as instance:
        passes: dict[tuple[str, int], list[tuple[float, str, dict[str, Any]]]] = {}
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="follow_read_models"))
        for run in runs:
            for record in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ):
                m = record.asset_materialization
                if m is None or "follow_pass" not in m.metadata:
                    continue
                md = {k: v.value for k, v in m.metadata.items()}
                key = (run.run_id[:8], md["follow_pass"])
                passes.setdefault(key, []).append(
                    (record.timestamp, m.asset_key.to_user_string(), md)
                )

        def began(tables: list[tuple[float, str, dict[str, Any]]]) -> float:
            md = tables[0][2]
            return md.get("pass_started_at", min(t for t, _, _ in tables))

        def took(tables: list[tuple[float, str, dict[str, Any]]]) -> float:
            md = tables[0][2]
            return md.get("pass_seconds", max(m["seconds"] for _, _, m in tables))

        ordered = sorted(passes.items(), key=lambda kv: began(kv[1]))
        gaps = [began(b) - began(a) for (_, a), (_, b) in pairwise(ordered)]
        print(
            f"{home}: {len(ordered)} passes; median {statistics.median(gaps):.2f} s between "
            f"beginnings, {statistics.median(took(t) for _, t in ordered):.2f} s each"
        )
        for ((run_id, n), tables), gap in zip(ordered[1:], gaps, strict=True):
            if gap > LONG or took(tables) > SLOW:
                detail = ", ".join(
                    f"{table} {m['seconds']:.2f} s ({m['events_applied']} events)"
                    for _, table, m in tables
                )
                print(
                    f"  run {run_id} pass {n}: began {gap:.2f} s after the previous one, "
                    f"took {took(tables):.2f} s; {detail}"
                )
