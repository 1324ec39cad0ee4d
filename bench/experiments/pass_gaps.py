# Issue 14 experiment: how regularly a kept `cqrs up` (the end-to-end benchmark's BENCH_E2E_KEEP
# folder) applied events: the end of each following pass (its last materialization, in time order
# across runs), the median gap between pass ends, and every pass that ended more than LONG seconds
# after the previous one or whose tables took more than SLOW seconds, with each table's seconds.
# Run:
#   BENCH_CPU_THIEF=0.45 BENCH_FULL=1 BENCH_E2E_PAIRS=1 BENCH_E2E_HIGH_RATE=0 \
#   BENCH_E2E_PER_BATCH=0 BENCH_E2E_KEEP=/tmp/keep .venv/bin/python -m cqrs_bench end_to_end
#   .venv/bin/python bench/experiments/pass_gaps.py /tmp/keep/*/*/data/dagster 2>/dev/null
import statistics
import sys
from itertools import pairwise

import dagster as dg

LONG, SLOW = 3.6, 1.0

for home in sys.argv[1:]:
    with dg.DagsterInstance.from_config(home) as instance:
        passes: dict[tuple[str, int], list[tuple[float, str, float, int]]] = {}
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="follow_read_models"))
        for run in runs:
            for record in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ):
                m = record.asset_materialization
                if m is None or "follow_pass" not in m.metadata:
                    continue
                md = m.metadata
                passes.setdefault((run.run_id[:8], md["follow_pass"].value), []).append(
                    (
                        record.timestamp,
                        m.asset_key.to_user_string(),
                        md["seconds"].value,
                        md["events_applied"].value,
                    )
                )
        ordered = sorted(passes.items(), key=lambda kv: max(t for t, *_ in kv[1]))
        ends = [max(t for t, *_ in tables) for _, tables in ordered]
        gaps = [b - a for a, b in pairwise(ends)]
        print(
            f"{home}: {len(ordered)} passes, median gap between pass ends {statistics.median(gaps):.2f} s"
        )
        for ((run_id, n), tables), gap in zip(ordered[1:], gaps, strict=True):
            seconds = sum(s for _, _, s, _ in tables)
            if gap > LONG or seconds > SLOW:
                detail = ", ".join(f"{table} {s:.2f} s ({e} events)" for _, table, s, e in tables)
                print(f"  run {run_id} pass {n}: {gap:.2f} s after the previous pass; {detail}")
