"""The read side, described once: which read models exist, what each is built from, in what
order and in what batches. Everything that projects runs this description: the Dagster assets
(one asset per stage, deps from ``deps``), follow mode (one :func:`catch_up` per pass), the
``cqrs`` rebuild (one stage at a time), the benchmarks and the exactly-once fault harness.

```
raw_events (bronze) ──> orders, customers (silver) ──> order_summary, daily_order_metrics (gold)
```

Bronze reads the bus; silver catches up with what bronze committed; gold follows silver. Every
step commits its rows with its checkpoint (:mod:`.commit`), so any driver may stop anywhere and
the next one goes on from the checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from cqrs_dagster.eventbus.port import EventBus

from .context import StepContext
from .delta_io import release_memory, seq_app_id, txn
from .gold import build_daily_order_metrics, build_order_summary
from .raw_ingest import ReadAhead, ingest_raw_events
from .report import StepReport
from .schemas import CUSTOMERS, DAILY_ORDER_METRICS, ORDER_SUMMARY, ORDERS, RAW_EVENTS
from .silver import project_customers, project_orders

Layer = Literal["bronze", "silver", "gold"]
# (context, bus, events at most, full recompute, raw ingest_seq not to read past) -> what it did
Step = Callable[[StepContext, EventBus | None, int, bool, int | None], StepReport]

# Bus events decoded per raw_events commit: raw ingest is linear in its batch (no MERGE), so a
# bounded batch costs nothing and bounds the resident set (bodies, the decode, the writer).
RAW_BATCH = 25_000
# Events one run applies per read model at most (in batches of CQRS_PROJECTION_BATCH_SIZE): the
# run's blocking checks read what it appended, so a bounded run keeps its peak RSS bounded (a
# 1M-event run peaked at ~1.5 GiB, a 250k one at ~0.86 GiB; issue 7 (f): <= 1 GiB). The sensor
# requests another run while a read model is behind.
MAX_EVENTS_PER_RUN = 250_000
MAX_BATCHES_PER_RUN = 20


def max_batches(batch_size: int) -> int:
    """Batches one run applies per read model: MAX_EVENTS_PER_RUN worth (at least one, at most
    MAX_BATCHES_PER_RUN)."""
    return max(1, min(MAX_BATCHES_PER_RUN, MAX_EVENTS_PER_RUN // max(1, batch_size)))


@dataclass(frozen=True)
class Stage:
    """One read model: its Delta table, layer, the tables it is built from, and its step."""

    table: str
    layer: Layer
    deps: tuple[str, ...]
    description: str
    step: Step = field(repr=False)

    @property
    def batched(self) -> bool:
        """Bronze and silver apply events in bounded batches; gold rebuilds what silver touched."""
        return self.layer != "gold"

    def run(
        self,
        ctx: StepContext,
        bus: EventBus | None = None,
        *,
        max_events: int,
        full: bool = False,
        until: int | None = None,
    ) -> StepReport:
        """One step: at most ``max_events`` events (bronze, silver; silver none past raw
        ``ingest_seq`` ``until``), or the touched keys/days (gold; every row with ``full``)."""
        return self.step(ctx, bus, max_events, full, until)

    def drain(
        self, ctx: StepContext, bus: EventBus | None, *, batch: int, full: bool = False
    ) -> list[StepReport]:
        """What one asset materialization does: batch after batch until nothing is left or a
        run's worth (:func:`max_batches`) was applied; gold once."""
        reports = [self.run(ctx, bus, max_events=batch, full=full)]
        if not self.batched:
            return reports
        while reports[-1].events_read > 0 and len(reports) < max_batches(batch):
            reports.append(self.run(ctx, bus, max_events=batch))
        return reports


def _bronze(
    ctx: StepContext, bus: EventBus | None, n: int, full: bool, until: int | None
) -> StepReport:
    if bus is None:
        raise ValueError("raw_events reads the event bus: pass one")
    return ingest_raw_events(ctx, bus, max_events=n)


RAW = Stage(
    RAW_EVENTS,
    "bronze",
    (),
    "Bronze: every domain event from the bus exactly once, with its envelope and bus position.\n\n"
    "Append-only, deduplicated by eventId; each partition's checkpoint is committed in the same "
    "Delta commit as the rows. Poison events go to dead_letter_events and never block the rest.",
    _bronze,
)
ORDERS_STAGE = Stage(
    ORDERS,
    "silver",
    (RAW_EVENTS,),
    "Silver: one row per order (status, total amount, item count, dates), current state.\n\n"
    "Version-guarded MERGE: a duplicate or older event never overwrites newer state.",
    lambda ctx, bus, n, full, until: project_orders(ctx, max_events=n, until=until),
)
CUSTOMERS_STAGE = Stage(
    CUSTOMERS,
    "silver",
    (RAW_EVENTS,),
    "Silver: one row per customer (name, email, dates), current state, version-guarded.",
    lambda ctx, bus, n, full, until: project_customers(ctx, max_events=n, until=until),
)
ORDER_SUMMARY_STAGE = Stage(
    ORDER_SUMMARY,
    "gold",
    (ORDERS, CUSTOMERS),
    "Gold: the reference's vw_order_summary, one row per order with its customer's name.",
    lambda ctx, bus, n, full, until: build_order_summary(ctx, full=full),
)
DAILY_ORDER_METRICS_STAGE = Stage(
    DAILY_ORDER_METRICS,
    "gold",
    (ORDERS,),
    "Gold: the reference's vw_daily_order_metrics: orders, revenue, average order value and "
    "unique customers per UTC day of creation, over every order whatever its status.",
    lambda ctx, bus, n, full, until: build_daily_order_metrics(ctx, full=full),
)

# In dependency order: a driver that runs them in this order never reads a table behind its deps.
STAGES: tuple[Stage, ...] = (
    RAW,
    ORDERS_STAGE,
    CUSTOMERS_STAGE,
    ORDER_SUMMARY_STAGE,
    DAILY_ORDER_METRICS_STAGE,
)
BY_TABLE: dict[str, Stage] = {s.table: s for s in STAGES}


def stage(table: str) -> Stage:
    """The stage that builds ``table`` (ValueError naming the read models otherwise)."""
    try:
        return BY_TABLE[table]
    except KeyError:
        names = ", ".join(BY_TABLE)
        raise ValueError(f"{table!r} is not a read model; choose one of {names}") from None


def layer(name: Layer) -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.layer == name)


class PassChecks(Protocol):
    """What a pass calls between layers, before a table feeds the next (the orchestrator's
    blocking checks: raise to stop the pass)."""

    def raw_appended(self, after_seq: int, upto_seq: int) -> None:
        """raw_events rows with ``after_seq < ingest_seq <= upto_seq`` were just committed."""

    def tables_written(self, ranges: Mapping[str, tuple[int, int]]) -> None:
        """These silver tables were just brought up to raw_events: each with the raw
        ``ingest_seq`` range ``(after, upto]`` its steps applied in this batch."""


@dataclass
class PassResult:
    """What a pass read from the bus, every step's report in order, and the reports of the
    tables it wrote (or, on a first pass, visited), by table."""

    events_read: int = 0
    reports: list[StepReport] = field(default_factory=list)
    written: dict[str, list[StepReport]] = field(default_factory=dict)


def catch_up(
    ctx: StepContext,
    bus: EventBus,
    *,
    max_events: int,
    batch_size: int | None = None,
    raw_batch_size: int = RAW_BATCH,
    first: bool = True,
    checks: PassChecks | None = None,
) -> PassResult:
    """Bronze and silver in batches of ``batch_size`` (default ``max_events``) until a bus read
    finds every partition at its head or ``max_events`` bus events were read, then gold once (when silver moved, or on a
    ``first`` pass: a heartbeat, or a backlog a crashed run left behind gold).

    Each batch is ingested in raw commits of at most ``raw_batch_size`` events, then every silver
    table catches up with it (a crashed run may have left a backlog): a silver MERGE rewrites the
    files it touches, so fewer, larger silver batches cost less when far behind. ``checks`` runs
    after the raw commits and after silver, before either feeds the next layer.

    With an engine that computes on two threads at once (:attr:`ProjectionEngine.concurrent`),
    silver folds batch K on two worker threads (one per table) while bronze ingests batch K+1 on
    this one: each step still commits alone with its own checkpoint, silver reads no raw row past
    its batch, and ``checks`` runs on this thread in the same order as before (a batch's raw
    checks before its silver, its silver checks before the next batch's silver and before gold),
    so what each table holds after any crash is what a sequential pass could leave. Bronze also
    reads and decodes its next bus chunk while it commits the last (:class:`.raw_ingest.ReadAhead`:
    a read changes nothing). Gold stays sequential: each gold step holds the orders it reads
    (memory, issue 7 (f)).
    """
    batch = max(1, min(batch_size or max_events, max_events))

    def _want(read: int, events_read: int) -> int:
        """Bus events the next raw commit reads, ``read`` of the batch and ``events_read`` of
        the pass read (0: the pass reads no more)."""
        if events_read >= max_events:
            return 0
        read = read if read < batch else 0  # a new batch
        return max(1, min(raw_batch_size, batch - read, max_events - events_read))

    out = PassResult()
    moved: dict[str, bool] = {}
    silver_moved = False
    outer = 0
    ahead = ReadAhead(bus, ctx.engine) if ctx.engine.concurrent else None
    with _workers(ctx.engine.concurrent) as submit, ahead or nullcontext():
        pending: list[Future[tuple[list[StepReport], int | None]]] = []
        raw_seq = 0
        while True:
            before = txn(ctx.tables.open(RAW_EVENTS), seq_app_id(RAW_EVENTS))
            read = 0
            while True:
                want = _want(read, out.events_read)
                after_this = _want(read + want, out.events_read + want)  # if it is full
                raw = ingest_raw_events(ctx, bus, max_events=want, ahead=ahead, then=after_this)
                _record(out, moved, raw, first)
                read += raw.events_read
                out.events_read += raw.events_read
                # every partition gave less than asked: at its head
                drained = raw.events_read < want
                if drained or read >= batch or out.events_read >= max_events:
                    break
            upto = raw.checkpoint.get(seq_app_id(RAW_EVENTS), before)
            if checks is not None and upto > before:
                checks.raw_appended(before, upto)
            # the last batch's silver (its checks before this batch's silver starts)
            silver_moved = _silver_done(pending, raw_seq, out, moved, first, checks) or silver_moved
            raw_seq = upto
            visit = first and outer == 0  # a first pass reports every silver table once
            pending = [
                submit(_silver_to, s, ctx, raw_seq, batch, checks is not None, visit)
                for s in layer("silver")
            ]
            if not ctx.engine.concurrent:  # nothing ran beside it: its checks now, as ever
                silver_moved = (
                    _silver_done(pending, raw_seq, out, moved, first, checks) or silver_moved
                )
                pending = []
            if drained or out.events_read >= max_events:
                break
            outer += 1
        silver_moved = _silver_done(pending, raw_seq, out, moved, first, checks) or silver_moved
    appended = sum(r.rows_written for r in out.reports if r.table == RAW_EVENTS)
    if appended > ctx.recent.limit:
        # Gold reads from its checkpoint, at or before this pass's start: more raw rows than the
        # cache holds, so it reads Delta; the cache would only sit on gold's peak (~40 MiB).
        ctx.recent.clear()
    release_memory()  # what the workers freed, before gold's working set
    if silver_moved or first:
        for gold in layer("gold"):  # one after the other: each holds every order it reads
            _record(out, moved, gold.run(ctx, max_events=batch), True)
    out.written = {t: r for t, r in out.written.items() if moved.get(t)}
    return out


def _silver_to(
    silver: Stage, ctx: StepContext, raw_seq: int, batch: int, ranged: bool, visit: bool
) -> tuple[list[StepReport], int | None]:
    """Bring one silver table up to raw ``ingest_seq`` ``raw_seq`` (not past it), in steps of
    ``batch``: its reports, and where it started (``raw_seq`` unless ``ranged``: the checks'
    range), None when it did not move and not ``visit`` (a first pass visits every table)."""
    start = raw_seq
    if ranged:
        start = txn(ctx.tables.open(silver.table), seq_app_id(silver.table))
    reports: list[StepReport] = []
    while True:
        step = silver.run(ctx, max_events=batch, until=raw_seq)
        reports.append(step)
        if step.checkpoint.get(seq_app_id(silver.table), raw_seq) >= raw_seq:
            break
    if not visit and not any(r.events_read for r in reports):
        return reports, None  # not touched
    return reports, start


def _silver_done(
    pending: list[Future[tuple[list[StepReport], int | None]]],
    raw_seq: int,
    out: PassResult,
    moved: dict[str, bool],
    first: bool,
    checks: PassChecks | None,
) -> bool:
    """Wait for a batch's silver steps (in stage order), record them and run their checks;
    whether any silver table moved."""
    touched: dict[str, tuple[int, int]] = {}
    any_moved = False
    for future in pending:
        reports, start = future.result()
        for step in reports:
            _record(out, moved, step, first)
        any_moved = any_moved or any(r.events_read for r in reports)
        if start is not None:
            touched[reports[0].table] = (start, raw_seq)
    if checks is not None and touched:
        checks.tables_written(touched)
    return any_moved


T = TypeVar("T")


@contextmanager
def _workers(concurrent: bool) -> Iterator[Callable[..., Future[Any]]]:
    """``submit(fn, *args, **kwargs)``: on one of two worker threads when ``concurrent``, else
    at once on this thread (an error raised where it happens). Leaving the block waits for every
    submitted step, so no step outlives the pass (nor its error)."""
    if not concurrent:

        def now(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
            done: Future[T] = Future()
            done.set_result(fn(*args, **kwargs))
            return done

        yield now
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="catch-up") as pool:
        yield pool.submit


def _record(out: PassResult, moved: dict[str, bool], report: StepReport, keep: bool) -> None:
    out.reports.append(report)
    out.written.setdefault(report.table, []).append(report)
    moved[report.table] = moved.get(report.table, False) or keep or report.events_read > 0
