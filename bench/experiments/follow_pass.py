# Issue 14 experiment: the cost of one follow pass (catch_up + the catalog's blocking checks) on
# 600 new events after 20k, N passes (argv[1]); TREE=<checkout> picks the code. Medians per step.
# Run: TREE=$PWD .venv/bin/python bench/experiments/follow_pass.py 60
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
# warm: 20k events history
bus.send(list(itertools.islice(gen, 20000)))
catch_up(ctx, bus, max_events=50000, checks=Checks())
per = {}
for p in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    bus.send(list(itertools.islice(gen, 600)))
    marks.clear()
    s = time.perf_counter(); c0 = time.process_time()
    r = catch_up(ctx, bus, max_events=50000, first=False, checks=Checks())
    total = time.perf_counter() - s
    per.setdefault('total', []).append(total)
    per.setdefault('cpu', []).append(time.process_time() - c0)
    for rep in r.reports:
        per.setdefault(rep.table, []).append(rep.seconds)
    for k, v in marks:
        per.setdefault(k, []).append(v)
for k, v in per.items():
    print(f'{k:22s} median {statistics.median(v)*1000:7.1f} ms  max {max(v)*1000:7.1f}')
