# Issue 14 experiment: the CPU a Dagster run burns while its step waits for the writer pool
# (cqrs_dagster/defs/pool_claims.py). One in-process run of a one-op job whose op claims the pool
# (limit 1, as dagster.yaml sets it) while another "run" holds the slot; the slot is freed after
# WAIT seconds. Prints the process's CPU seconds over the run, without and with the fix, each in a
# fresh interpreter (the fix patches a class), alternating.
#   .venv/bin/python bench/experiments/pool_wait_cpu.py [WAIT] [PAIRS] 2>/dev/null  (stderr: the runs' logs)
import subprocess
import sys

CHILD = """
import sys, time
import dagster as dg
from cqrs_dagster.defs import pool_claims
from cqrs_dagster_tests.fixtures.pools import POOLED, freed_after, hold_the_pool, one_writer

if sys.argv[1] == "fixed":
    assert pool_claims.sleep_between_pool_claims()
with dg.instance_for_test(overrides=POOLED) as inst:
    hold_the_pool(inst)
    cpu, wall = time.process_time(), time.monotonic()
    with freed_after(inst, float(sys.argv[2])) as freed:
        result = one_writer.execute_in_process(instance=inst)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    late = result.output_for_node("write_something") - freed[0]
    print(f"{sys.argv[1]:>7}: run {wall:5.2f} s, CPU {cpu:5.2f} s, op started {late:4.2f} s after the slot was freed")
"""

wait = sys.argv[1] if len(sys.argv) > 1 else "10"
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
for i in range(pairs):
    for mode in ("spin", "fixed") if i % 2 == 0 else ("fixed", "spin"):
        subprocess.run([sys.executable, "-c", CHILD, mode, wait], check=True)
