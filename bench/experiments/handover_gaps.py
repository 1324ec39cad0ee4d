# Issue 14 experiment: the gap between consecutive following runs of a kept `cqrs up` (the
# end-to-end benchmark's BENCH_E2E_KEEP folder): for each pair of runs in creation order, the time
# from the first one's projection step ending to the next one's starting, and from its last
# materialization to the next one's first. With a short cap, every cap is a handover.
# Run (a changed setting: the cap, 40 s instead of 600 s, so that a 2-minute load meets 3 caps):
#   CQRS_PROJECTION_FOLLOW_SECONDS=40 BENCH_FULL=1 BENCH_E2E_SECONDS=120 BENCH_E2E_WAITERS=0 \
#   BENCH_E2E_HIGH_RATE=0 BENCH_E2E_PER_BATCH=0 BENCH_E2E_KEEP=/tmp/keep \
#   .venv/bin/python -m cqrs_bench end_to_end --repetitions 1
#   .venv/bin/python bench/experiments/handover_gaps.py /tmp/keep/*/*/data/dagster
# The first pair is the warm-up run (ended idle) and the first run of the load: not a handover.
import sys
from itertools import pairwise

import dagster as dg

STEP = "follow_projection"

for home in sys.argv[1:]:
    with dg.DagsterInstance.from_config(home) as instance:
        records = sorted(
            instance.get_run_records(filters=dg.RunsFilter(job_name="follow_read_models")),
            key=lambda r: r.create_timestamp,
        )

        def times(run_id: str, kind: dg.DagsterEventType, step: str | None = STEP) -> list[float]:
            return [
                e.timestamp
                for e in instance.all_logs(run_id, of_type=kind)
                if step is None or e.step_key == step
            ]

        print(f"{home}: {len(records)} following runs")
        for a, b in pairwise(records):
            ended = times(a.dagster_run.run_id, dg.DagsterEventType.STEP_SUCCESS)
            started = times(b.dagster_run.run_id, dg.DagsterEventType.STEP_START)
            last = times(a.dagster_run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION, None)
            first = times(b.dagster_run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION, None)
            if ended and started and last and first:
                handover = b.dagster_run.tags.get("cqrs/handover_from") == a.dagster_run.run_id
                print(
                    f"  {'handover' if handover else 'next run'}: step end -> next step start "
                    f"{started[0] - ended[0]:.2f} s; last materialization -> next first "
                    f"{first[0] - last[-1]:.2f} s"
                )
