# Issue 14 experiment: the cost of each step of a follow pass when one UTC day already holds many
# orders (daily_order_metrics used to re-aggregate every order of the days a pass created orders
# on). argv: BASE events of backlog first (the benchmark's backlog from midnight, one event per
# 50 ms of event time: 1.2M events are one day, ~372k orders), then N passes of 600 events of
# the full mix (status changes and renames included), compacting as a following run does.
# Prints each step's median seconds over the N passes and the process's peak RSS.
# TREE=<checkout> picks the code. Run: TREE=$PWD .venv/bin/python bench/experiments/daily_pass.py 1200000 40
import itertools
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.environ.get('TREE', str(Path(__file__).resolve().parents[2])))
from cqrs_bench.catch_up import PARTITIONS, backlog
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.maintenance import compact_small_files
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import TableStore

base = int(sys.argv[1])
N = int(sys.argv[2])
folder = Path(tempfile.mkdtemp())
bus = LocalEventBus(folder / 'bus.sqlite', partition_count=PARTITIONS)
tables = TableStore(root=str(folder / 'delta'))
ctx = StepContext(tables, 'exp')
gen = backlog(10**8)
for _ in range(base // 200_000):
    bus.send(list(itertools.islice(gen, 200_000)))
catch_up(ctx, bus, max_events=10**7)
# the daily maintenance compacts a day's files
compact_small_files(tables, min_files=2)
t = []
for p in range(N):
    bus.send(list(itertools.islice(gen, 600)))
    if p and p % 10 == 0:
        compact_small_files(tables)
    r = catch_up(ctx, bus, max_events=50000, first=False)
    t.append({x.table: x.seconds for x in r.reports})
for k in t[0]:
    print(f'{k:22s} median {statistics.median(d[k] for d in t)*1000:7.1f} ms')
print('peak rss MiB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
