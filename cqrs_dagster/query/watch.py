"""One watcher for every read-your-writes wait: waits cost no thread and no Delta refresh each.

A request that must wait for consistency tokens registers with :class:`ConsistencyWatcher` and
awaits an asyncio future (no thread held). The watcher's one thread, while anything waits, runs a
*pass* every ``interval`` seconds (counted from the end of the previous pass, so a slow pass never
runs back to back with the next):

1. ONE refresh of the gold tables the waiting tokens need (``update_incremental``: new log
   entries only), whatever the number of waiters. A token is included only once a gold
   checkpoint covers its event, so when they have no new commit and the last full pass is under
   ``FULL_PASS_SECONDS`` old (``NEW_TOKENS_SECONDS`` when new tokens wait), the pass ends here;
2. else (a *full* pass) one refresh of the silver tables and raw_events (read after the gold
   tables), and the gold checkpoints, read once and shared by every token;
3. per distinct token, the silver version and the raw position of the token's event, looked up only
   when that token is new to the watcher or its silver / raw table has a new commit since the
   token's last lookup (one batched query per table when many tokens need it). A token's raw
   position never changes once found, so it is looked up once;
4. every waiter whose tokens are all included is woken on its own event loop: one call per loop
   per pass, which resolves the woken waiters' futures ``WAKE_CHUNK`` at a time and yields to the
   loop between chunks (a pass can wake hundreds of waiters: their answers then interleave with
   the loop's other requests instead of running as one burst ahead of them). Before that, the
   watcher's optional ``prefetch`` reads ahead, in one batched query, what the woken waiters will
   answer (the query API: their orders' order_summary rows at this pass's snapshot).

:meth:`ConsistencyWatcher.snapshot` gives the gold tables' snapshots as of the last pass (set before
that pass wakes anyone), so a woken waiter can answer from rows already read at that snapshot.

A waiter whose time runs out gets the states of the last full pass (the 412 answer's body). A pass
that fails is logged (the first failure of a run of them with its traceback, then every 100th),
counted in :attr:`ConsistencyWatcher.failures`, and retried at the next pass: the thread never
dies of it and waiters keep waiting until they are included or their time runs out.
:meth:`ConsistencyWatcher.close` stops and joins the thread and wakes every waiter at once with
what is known; a later wait starts the thread again. With no waiter the thread sleeps (no refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow.compute as pc

from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.schemas import RAW_EVENTS

from .consistency import DEPENDENTS, Token, TokenState, tables_for
from .views import ReadModels

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.05
# A pass whose gold tables have no new commit (and no new token) stops after refreshing them; a
# full pass still runs at least this often, so a 412's silver / raw states are this fresh.
FULL_PASS_SECONDS = 1.0
# New tokens (not yet looked up) are taken in by the next full pass, at the latest this long after
# the last one: arriving a few per pass, they are looked up together (batched) rather than one by
# one in every pass. A fresh write waits for a gold commit anyway (which starts a full pass); a
# token already included but not remembered waits up to this long.
NEW_TOKENS_SECONDS = 0.25
# Above this many tokens needing a lookup in one table, one query reads them all (a scan of the
# key column) instead of one file-pruned lookup each.
BATCH_LOOKUPS_ABOVE = 16
JOIN_TIMEOUT_SECONDS = 5.0
# Tokens seen included, remembered (the least recently seen dropped first) so that a wait on one
# answers at once:
# a token once included stays included (the tables only move forward).
REMEMBER_INCLUDED = 100_000
LOG_EVERY_FAILURES = 100
# Woken waiters resolved per event-loop callback; the rest in the loop's next iterations, after
# the I/O that arrived meanwhile. Smaller chunks let a request without a wait in sooner during a
# burst (`cqrs up`, 200 commands/s, 500 waiters, 60 s runs, plain lookup p99 over 3 interleaved
# runs each: 32 -> 68.4 / 62.0 / 87.7 ms, 8 -> 44.6 / 41.7 / 71.7 ms; waits answered alike).
WAKE_CHUNK = 8

States = list[TokenState]
Snapshot = tuple[str, int | None]  # a table's URI and Delta version (None: absent)
# prefetch(models, gold snapshots, woken tokens): read ahead what the woken waiters will answer
Prefetch = Callable[[ReadModels, Mapping[str, Snapshot], Sequence[Token]], None]


@dataclass(eq=False)
class _Waiter:
    tokens: tuple[Token, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[States | None]
    last: States | None = field(default=None)  # as of the last pass that saw this waiter

    def wake(self, states: States | None) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
            self.loop.call_soon_threadsafe(_resolve, self.future, states)


Wake = tuple[asyncio.Future[States | None], States | None]


def _wake_all(woken: Sequence[tuple[_Waiter, States]]) -> None:
    """Wake ``woken`` with one thread-safe call per event loop, resolved in chunks there."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Wake]] = {}
    for w, states in woken:
        by_loop.setdefault(w.loop, []).append((w.future, states))
    for loop, wakes in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(_resolve_chunks, loop, wakes, 0)


def _resolve_chunks(loop: asyncio.AbstractEventLoop, wakes: list[Wake], start: int) -> None:
    """Resolve ``WAKE_CHUNK`` futures from ``start``; the next chunk in a later loop iteration
    (``call_soon`` runs after the woken tasks' first steps and the I/O polled in between)."""
    end = start + WAKE_CHUNK
    for future, states in wakes[start:end]:
        _resolve(future, states)
    if end < len(wakes):
        loop.call_soon(_resolve_chunks, loop, wakes, end)


def _resolve(future: asyncio.Future[States | None], states: States | None) -> None:
    if not future.done():  # a waiter that timed out or was cancelled has a done future
        future.set_result(states)


@dataclass
class _Progress:
    """What the watcher knows of one token (kept while something waits for it)."""

    silver_version: int | None = None
    silver_at: Snapshot | None = None  # silver snapshot of the last lookup
    seq: int | None = None  # the token's raw_events position, once known (never changes)
    raw_at: Snapshot | None = None  # raw_events snapshot of the last lookup


@dataclass
class _Memory:
    """What the watcher's thread carries from pass to pass (reset when nothing waits)."""

    known: dict[Token, _Progress] = field(default_factory=dict)
    gold_at: dict[str, Snapshot] = field(default_factory=dict)  # the gold tables' snapshots
    gold: dict[str, int] = field(default_factory=dict)  # their checkpoints, as of gold_at
    full_at: float = float("-inf")  # monotonic time of the last full pass


class ConsistencyWatcher:
    """Wakes waiting requests when the read models include their tokens (one thread, lazily)."""

    def __init__(
        self,
        models: Callable[[], ReadModels],
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        prefetch: Prefetch | None = None,
    ) -> None:
        self._models = models
        self._prefetch = prefetch
        self._interval = interval
        self._cond = threading.Condition()
        self._waiters: set[_Waiter] = set()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None  # the running thread's
        self._idle = False  # the thread is asleep until a waiter arrives
        self._failing = 0  # consecutive failed passes
        self._included: OrderedDict[Token, None] = OrderedDict()  # guarded by _cond
        self._snapshots: dict[str, Snapshot] = {}  # the gold tables' as of the last pass
        # Counters (read them from any thread; only the watcher's thread writes them).
        self.passes = 0  # passes run (each refreshes the gold tables once)
        self.full_passes = 0  # of which full: silver and raw_events refreshed too, lookups
        self.refreshes = 0  # ReadModels.refresh calls made by the watcher (1 or 2 per pass)
        self.lookups = 0  # silver / raw queries (a batched query counts once)
        self.failures = 0  # passes that raised
        self.woken = 0  # waiters woken because their tokens were included
        # Full passes whose refresh and checks are done, counted before they wake anyone: a
        # waiter woken by a pass reads a generation >= that pass's, and whatever starts reading
        # the read models once the generation is g reads a snapshot at least as new as pass g's.
        self.generation = 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiters)

    @property
    def thread(self) -> threading.Thread | None:
        """The watcher's thread while it runs (None before the first wait and after close)."""
        with self._cond:
            return self._thread

    def included(self, tokens: Sequence[Token]) -> bool:
        """Whether a pass has seen every one of ``tokens`` included (no I/O: remembered)."""
        with self._cond:
            return all(t in self._included for t in tokens)

    def snapshot(self, name: str) -> Snapshot | None:
        """Gold table ``name``'s snapshot as refreshed by the last pass (None: no pass read it).

        Set before that pass wakes anyone, and only moves forward: a waiter woken by a pass
        reads a snapshot at least as new as the one that included its tokens.
        """
        return self._snapshots.get(name)

    def _remember(self, tokens: Sequence[Token]) -> None:
        with self._cond:
            for t in tokens:
                self._included[t] = None
                self._included.move_to_end(t)
            while len(self._included) > REMEMBER_INCLUDED:
                self._included.popitem(last=False)

    async def wait(self, tokens: Sequence[Token], timeout: float) -> States | None:
        """The tokens' states once all are included, else the last pass's states at ``timeout``
        seconds (None if no pass ran for this waiter in time, or the watcher closed first)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tuple(tokens), loop, loop.create_future())
        with self._cond:
            self._waiters.add(waiter)
            self._ensure_thread()
            if self._idle:
                self._cond.notify_all()
        try:
            return await asyncio.wait_for(waiter.future, max(timeout, 0.0))
        except TimeoutError:
            return waiter.last
        finally:
            with self._cond:
                self._waiters.discard(waiter)

    def close(self, timeout: float = JOIN_TIMEOUT_SECONDS) -> None:
        """Stop and join the thread; wake every waiter now with the last states it has."""
        with self._cond:
            thread, stop = self._thread, self._stop
            self._thread = self._stop = None
            if stop is not None:
                stop.set()
            waiters = list(self._waiters)
            self._cond.notify_all()
        for w in waiters:
            w.wake(w.last)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.error("consistency watcher did not stop within %s s", timeout)

    def _ensure_thread(self) -> None:
        """Start the thread unless it runs (called with the condition held)."""
        if self._thread is not None and self._thread.is_alive():
            return
        stop = threading.Event()
        self._stop = stop
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name="consistency-watcher", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        memory = _Memory()  # this thread's own
        next_pass = 0.0
        while True:
            with self._cond:
                while not stop.is_set():
                    if not self._waiters:
                        self._idle = True
                        memory = _Memory()
                        self._cond.wait()
                        continue
                    delay = next_pass - time.monotonic()
                    if delay <= 0:
                        break
                    self._idle = False
                    self._cond.wait(delay)
                self._idle = False
                if stop.is_set():
                    return
                waiters = list(self._waiters)
            try:
                self._pass(waiters, memory)
            except Exception:  # never let a failing pass end the thread: retry at the next one
                self._failed()
            next_pass = time.monotonic() + self._interval

    def _failed(self) -> None:
        self.failures += 1
        self._failing += 1
        if self._failing == 1 or self._failing % LOG_EVERY_FAILURES == 0:
            log.exception(
                "consistency watcher pass failed (%d in a row); retrying every %s s",
                self._failing,
                self._interval,
            )

    def _pass(self, waiters: list[_Waiter], memory: _Memory) -> None:
        self.passes += 1
        models = self._models()
        tokens = {t for w in waiters for t in w.tokens}
        known = memory.known
        for gone in known.keys() - tokens:
            del known[gone]
        gold_names = sorted({g for t in tokens for g in DEPENDENTS[t.aggregate_type].gold})
        # The gold tables first: a token is included only once a gold checkpoint covers its
        # event, so while they have no new commit (and no new token came) nothing can change.
        versions = models.refresh(gold_names)
        self.refreshes += 1
        gold_at = {g: (models.tables.uri(g), versions.get(g)) for g in gold_names}
        self._snapshots = {**self._snapshots, **gold_at}  # one reference swap: no lock
        moved = any(memory.gold_at.get(g) != at for g, at in gold_at.items())
        new = any(t not in known for t in tokens)
        since = time.monotonic() - memory.full_at
        if not moved and since < FULL_PASS_SECONDS and not (new and since >= NEW_TOKENS_SECONDS):
            self._succeeded()
            for w in waiters:
                if w.last is None and all(t in known for t in w.tokens):
                    w.last = [_state(t, known[t], memory.gold) for t in w.tokens]
            return
        # A full pass: silver and raw_events, read after the gold tables, then the lookups.
        memory.full_at = time.monotonic()
        self.full_passes += 1
        others = [n for n in tables_for(list(tokens)) if n not in gold_at]
        versions = models.refresh(others)
        self.refreshes += 1
        at: dict[str, Snapshot] = {n: (models.tables.uri(n), versions.get(n)) for n in others}
        for t in tokens:
            known.setdefault(t, _Progress())
        self._look_up(models, at, known)
        if moved or any(g not in memory.gold for g in gold_names):
            memory.gold = {g: txn(models.table(g), seq_app_id(g)) for g in gold_names}
            memory.gold_at = gold_at
        self._succeeded()
        done = [t for t in tokens if _state(t, known[t], memory.gold).satisfied]
        self._remember(done)
        self.generation += 1  # before any wake: see the attribute
        woken: list[tuple[_Waiter, States]] = []
        for w in waiters:
            states = [_state(t, known[t], memory.gold) for t in w.tokens]
            w.last = states
            if all(s.satisfied for s in states):
                self.woken += 1
                woken.append((w, states))
        if woken and self._prefetch is not None:
            try:
                self._prefetch(models, gold_at, list({t for w, _ in woken for t in w.tokens}))
            except Exception:  # an optimisation: the waiters then read their rows themselves
                log.warning("consistency watcher prefetch failed", exc_info=True)
        _wake_all(woken)

    def _succeeded(self) -> None:
        if self._failing:
            log.info("consistency watcher passes succeed again after %d failures", self._failing)
            self._failing = 0

    def _look_up(
        self, models: ReadModels, at: dict[str, Snapshot], known: dict[Token, _Progress]
    ) -> None:
        """Bring each token's silver version and raw position up to the snapshots ``at``."""
        raw_at = at[RAW_EVENTS]
        for kind, dep in DEPENDENTS.items():
            mine = [(t, k) for t, k in known.items() if t.aggregate_type == kind]
            if not mine:
                continue
            silver_at = at[dep.silver]
            stale = [(t, k) for t, k in mine if k.silver_at != silver_at]
            if stale:
                ids = [t.aggregate_id for t, _ in stale]
                found = self._silver_versions(models, dep.silver, dep.key, ids)
                for t, k in stale:
                    k.silver_version = found.get(t.aggregate_id)
                    k.silver_at = silver_at
            # A token's raw position is looked up once silver has the token's version, again only
            # while it is not found and raw_events moved on, or when raw_events was swapped.
            missing = [
                (t, k)
                for t, k in mine
                if _covers(k.silver_version, t)
                and (
                    (k.seq is None and k.raw_at != raw_at)
                    or (k.raw_at is not None and k.raw_at[0] != raw_at[0])
                )
            ]
            if missing:
                seqs = self._raw_positions(models, kind, [t for t, _ in missing])
                for t, k in missing:
                    k.seq = seqs.get(t)
                    k.raw_at = raw_at

    def _silver_versions(
        self, models: ReadModels, silver: str, key: str, ids: list[str]
    ) -> dict[str, int]:
        """The newest version of each id in ``silver`` (ids it does not hold are left out)."""
        out: dict[str, int] = {}
        if len(ids) > BATCH_LOOKUPS_ABOVE:
            self.lookups += 1
            rows = models.execute(
                f'SELECT "{key}" AS id, max(version) AS v FROM {silver} '
                f'WHERE "{key}" IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1',
                [sorted(set(ids))],
            )
            ids_found = rows.column("id").to_pylist()
            return {
                str(i): int(v) for i, v in zip(ids_found, rows.column("v").to_pylist(), strict=True)
            }
        for aggregate_id in dict.fromkeys(ids):
            self.lookups += 1
            rows = models.rows_where(silver, key, aggregate_id)
            if rows.num_rows:
                out[aggregate_id] = int(pc.max(rows.column("version")).as_py())
        return out

    def _raw_positions(
        self, models: ReadModels, kind: str, tokens: list[Token]
    ) -> dict[Token, int]:
        """The raw_events position (least ingest_seq) of each token's own event, where present."""
        out: dict[Token, int] = {}
        if len(tokens) > BATCH_LOOKUPS_ABOVE:
            self.lookups += 1
            rows = models.execute(
                "SELECT aggregate_id, version, min(ingest_seq) AS seq FROM raw_events "
                "WHERE aggregate_type = ? AND aggregate_id IN (SELECT unnest(?::VARCHAR[])) "
                "GROUP BY 1, 2",
                [kind, sorted({t.aggregate_id for t in tokens})],
            )
            found = {
                (str(i), int(v)): int(s)
                for i, v, s in zip(
                    rows.column("aggregate_id").to_pylist(),
                    rows.column("version").to_pylist(),
                    rows.column("seq").to_pylist(),
                    strict=True,
                )
            }
            for t in tokens:
                if (t.aggregate_id, t.version) in found:
                    out[t] = found[(t.aggregate_id, t.version)]
            return out
        for t in tokens:
            self.lookups += 1
            events = models.rows_where(RAW_EVENTS, "aggregate_id", t.aggregate_id)
            mine = events.filter(
                (pc.field("aggregate_type") == t.aggregate_type)
                & (pc.field("version") == t.version)
            )
            if mine.num_rows:
                out[t] = int(pc.min(mine.column("ingest_seq")).as_py())
        return out


def _covers(silver_version: int | None, token: Token) -> bool:
    return silver_version is not None and silver_version >= token.version


def _state(token: Token, known: _Progress, gold: dict[str, int]) -> TokenState:
    """The token's state from what the watcher knows (as ``consistency.check`` computes it)."""
    seq = known.seq if _covers(known.silver_version, token) else None
    dep = DEPENDENTS[token.aggregate_type]
    return TokenState(token, known.silver_version, seq, {g: gold[g] for g in dep.gold})
