"""One watcher for every read-your-writes wait: waits cost no thread and no Delta refresh each.

A request that must wait for consistency tokens registers with :class:`ConsistencyWatcher` and
awaits an asyncio future (no thread held). The watcher's one thread, while anything waits, refreshes
the tables the waiters need ONCE per pass (every ``interval`` seconds), checks each distinct set of
tokens once on that snapshot (200 waits on one token: one check), and wakes every waiter whose
tokens are now included. A waiter whose time runs out gets the states of the last pass (the 412
answer's body); the watcher itself never times out and idles (no refresh) when nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .consistency import Token, TokenState, check, tables_for
from .views import ReadModels

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.05

CheckFn = Callable[[ReadModels, Sequence[Token]], list[TokenState]]


def _check_on_snapshot(models: ReadModels, tokens: Sequence[Token]) -> list[TokenState]:
    return check(models, tokens, refresh=False)


@dataclass(eq=False)
class _Waiter:
    tokens: tuple[Token, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[TokenState]]
    last: list[TokenState] | None = field(default=None)


class ConsistencyWatcher:
    """Wakes waiting requests when the read models include their tokens (one thread, lazily)."""

    def __init__(
        self,
        models: Callable[[], ReadModels],
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        check_fn: CheckFn = _check_on_snapshot,
    ) -> None:
        self._models = models
        self._interval = interval
        self._check = check_fn
        self._cond = threading.Condition()
        self._waiters: set[_Waiter] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.refreshes = 0  # Delta refreshes (one per pass, whatever the number of waiters)
        self.checks = 0  # token-set checks (one per distinct token set per pass)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiters)

    async def wait(self, tokens: Sequence[Token], timeout: float) -> list[TokenState] | None:
        """The tokens' states once all are included, or the last pass's states at ``timeout``
        (None if no pass ran in time)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tuple(tokens), loop, loop.create_future())
        with self._cond:
            if self._stopped:
                raise RuntimeError("the consistency watcher is stopped")
            self._waiters.add(waiter)
            self._ensure_thread()
            self._cond.notify_all()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), max(timeout, 0.0))
        except TimeoutError:
            return waiter.last
        finally:
            with self._cond:
                self._waiters.discard(waiter)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="consistency-watcher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                waiters = list(self._waiters)
            try:
                self._pass(waiters)
            except Exception:  # a failing pass must not strand the waiters: retry next pass
                log.exception("consistency watcher pass failed")
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(self._interval)

    def _pass(self, waiters: list[_Waiter]) -> None:
        models = self._models()
        tables = sorted({t for w in waiters for t in tables_for(w.tokens)})
        models.refresh(tables)
        self.refreshes += 1
        by_tokens: dict[tuple[Token, ...], list[_Waiter]] = {}
        for w in waiters:
            by_tokens.setdefault(w.tokens, []).append(w)
        for tokens, group in by_tokens.items():
            states = self._check(models, tokens)
            self.checks += 1
            done = all(s.satisfied for s in states)
            for w in group:
                w.last = states
                if done:
                    with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                        w.loop.call_soon_threadsafe(_resolve, w.future, states)


def _resolve(future: asyncio.Future[list[TokenState]], states: list[TokenState]) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        if not future.done():
            future.set_result(states)
