# Issue 14 experiment: the cost of one follow pass (catch_up + the catalog's blocking checks) on
# 600 new events a pass after 20k, N passes (argv[1]); TREE=<checkout> picks the code. Medians
# per step, and per block of 50 passes (how a pass's cost grows with the passes before it).
# CREATES=1: new customers and orders only (as the end-to-end load); COMPACT=1: compact small
# files every FOLLOW_COMPACT_EVERY_PASSES passes, as a following run does.
# Run: CREATES=1 COMPACT=1 TREE=$PWD .venv/bin/python bench/experiments/follow_pass.py 250
import sys, time, statistics, tempfile, itertools
from pathlib import Path
import os; sys.path.insert(0, os.environ.get('TREE', str(Path(__file__).resolve().parents[2])))
from cqrs_bench.catch_up import backlog, PARTITIONS
from cqrs_dagster.eventbus.local import LocalEventBus
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.projections import schemas
from cqrs_dagster.quality.catalog import blocking_on
from cqrs_dagster.quality.scope import RunScope
from cqrs_dagster.wiring import make_engine
from cqrs_dagster.settings import load_settings
from cqrs_dagster.projections.maintenance import FOLLOW_COMPACT_EVERY_PASSES, compact_small_files

folder = Path(tempfile.mkdtemp())
bus = LocalEventBus(folder / 'bus.sqlite', partition_count=PARTITIONS)
tables = TableStore(root=str(folder / 'delta'))
engine = make_engine(load_settings(projection_engine='duckdb'))
ctx = StepContext(tables, 'exp', engine=engine)
marks = []
try:
    from cqrs_dagster.projections.tables import PinnedTables
    pin = PinnedTables.of
    sc = lambda a, u: RunScope(after_seq=a, upto_seq=u, recent=ctx.recent)
except ImportError:
    pin = lambda t: t
    sc = lambda a, u: RunScope(after_seq=a, upto_seq=u)
class Checks:
    def raw_appended(self, a, u):
        s = time.perf_counter()
        p = pin(tables)
        for c in blocking_on(schemas.RAW_EVENTS):
            c.evaluate(p, sc(a, u))
        marks.append(('rawchk', time.perf_counter() - s))
    def tables_written(self, ranges):
        s = time.perf_counter()
        p = pin(tables)
        for t, (a, u) in ranges.items():
            for c in blocking_on(t):
                c.evaluate(p, sc(a, u))
        marks.append(('silverchk', time.perf_counter() - s))
gen = backlog(10**7)
if os.environ.get('CREATES'): gen = (e for e in gen if b'"OrderUpdated"' not in e.body and b'"CustomerUpdated"' not in e.body)
# warm: 20k events history
bus.send(list(itertools.islice(gen, 20000)))
catch_up(ctx, bus, max_events=50000, checks=Checks())
per = {}
N = int(sys.argv[1]); trend = []; steps = []; comp = []
for p in range(N):
    bus.send(list(itertools.islice(gen, 600)))
    marks.clear()
    if os.environ.get('COMPACT') and p and p % FOLLOW_COMPACT_EVERY_PASSES == 0:  # as follow mode does
        t0 = time.perf_counter(); done = compact_small_files(tables); comp.append((time.perf_counter()-t0, [(d.table, d.files_before, d.files_removed) for d in done]))
    s = time.perf_counter(); c0 = time.process_time()
    r = catch_up(ctx, bus, max_events=50000, first=False, checks=Checks())
    total = time.perf_counter() - s; trend.append((total, time.process_time() - c0)); steps.append({**{rep.table: rep.seconds for rep in r.reports}, **dict(marks)})
    per.setdefault('total', []).append(total)
    per.setdefault('cpu', []).append(time.process_time() - c0)
    for rep in r.reports:
        per.setdefault(rep.table, []).append(rep.seconds)
    for k, v in marks:
        per.setdefault(k, []).append(v)
for k, v in per.items():
    print(f'{k:22s} median {statistics.median(v)*1000:7.1f} ms  max {max(v)*1000:7.1f}')
for i in range(0, N, 50):
    blk = trend[i:i+50]
    print(f'passes {i:4d}-{i+len(blk)-1:4d}: wall median {statistics.median(t for t,_ in blk)*1000:6.1f} ms, cpu median {statistics.median(c for _,c in blk)*1000:6.1f} ms')
import collections
print('first 50:', {k: round(statistics.median(d.get(k,0) for d in steps[:50])*1000,1) for k in steps[-1]}); print('last 50:', {k: round(statistics.median(d.get(k,0) for d in steps[-50:])*1000,1) for k in steps[-1]})
print('compactions:', [(round(t,3), d) for t, d in comp if d])
print('files per table:', {t: len(__import__('deltalake').DeltaTable(str(folder/'delta'/t)).file_uris()) for t in schemas.READ_MODELS})
