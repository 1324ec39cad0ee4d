"""Group commit: many commands, ONE durable commit, each caller acknowledged after it.

At ``synchronous=FULL`` every SQLite commit waits for an fsync (~6,000 commits/s on the reference
disk), so one commit per command caps the write side there. :class:`GroupCommitter` owns ONE
writer thread that takes every command queued since its last commit (up to ``max_batch``),
decides them one after another inside one write batch (:meth:`CommandHandler.handle_batch`:
later commands see earlier ones' writes; a failing command gets its own error and writes
nothing), commits once, and only then resolves each caller's future. A command is never
acknowledged before the commit that holds its write is durable.

If the batch itself fails (store error, failed commit, a bug) nothing of it is durable and every
caller in it gets that exception; the writer keeps serving the next batch. After :meth:`close`
(or if the writer thread dies), queued and new commands fail with :class:`CommitterClosed`.

A single writer also serializes the commands of one process, so two concurrent commands on one
aggregate never conflict with each other (they still conflict with other processes' writes).

Callers: threads use :meth:`submit` / :meth:`handle` (a ``concurrent.futures.Future``); asyncio
code awaits :meth:`execute`, whose futures are resolved with ONE ``call_soon_threadsafe`` per
batch and event loop rather than one wake-up per command.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from cqrs_dagster.domain.commands import Command

from .handler import CommandHandler, CommandResult

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 512
Outcome = CommandResult | BaseException


class CommitterClosed(RuntimeError):
    """The group committer is closed (or its writer died): the command was not applied."""


@dataclass(slots=True)
class _Pending:
    command: Command
    user_id: str
    future: Future[CommandResult] | asyncio.Future[CommandResult]
    loop: asyncio.AbstractEventLoop | None = None  # set for asyncio futures


_STOP = object()


class GroupCommitter:
    """A writer thread that applies queued commands in group commits (see the module doc)."""

    def __init__(
        self,
        handler: CommandHandler,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "group-commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.handler = handler
        self.max_batch = max_batch
        self.batches = 0  # committed or failed batches (for tests and metrics)
        self.commands = 0
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers -------------------------------------------------------------------------------

    def submit(self, command: Command, user_id: str = "anonymous") -> Future[CommandResult]:
        """Queue a command; the future holds its result (or DomainError) once it is durable."""
        future: Future[CommandResult] = Future()
        self._put(_Pending(command, user_id, future))
        return future

    def handle(self, command: Command, user_id: str = "anonymous") -> CommandResult:
        """Apply one command through the group commit and wait for it (a blocking ``handle``)."""
        return self.submit(command, user_id).result()

    async def execute(self, command: Command, user_id: str = "anonymous") -> CommandResult:
        """Apply one command through the group commit; returns once its batch is durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommandResult] = loop.create_future()
        self._put(_Pending(command, user_id, future, loop))
        return await future

    def _put(self, pending: _Pending) -> None:
        # ``_closed`` is also set by the writer as it stops, whatever stops it: no
        # ``Thread.is_alive()`` (~0.35 µs of the event loop's time per command).
        if self._closed:
            raise CommitterClosed("the group committer is closed")
        self._queue.put(pending)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued commands, stop the writer; later submissions fail."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("group committer did not stop within %s s", timeout)
        self._fail_queued()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._commit(batch)
                if stop:
                    return
        finally:
            self._closed = True
            self._fail_queued()

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Block for one command, then take whatever else is queued (up to ``max_batch``)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            batch.append(item)
        return [p for p in batch if isinstance(p, _Pending)], False

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes: Sequence[Outcome] = self.handler.handle_batch(
                [(p.command, p.user_id) for p in batch]
            )
        except Exception as exc:
            log.exception("group commit of %d commands failed; none was written", len(batch))
            outcomes = [exc] * len(batch)
        except BaseException as exc:
            _deliver(batch, [CommitterClosed(f"the writer stopped: {exc!r}")] * len(batch))
            raise
        self.batches += 1
        self.commands += len(batch)
        _deliver(batch, outcomes)

    def _fail_queued(self) -> None:
        leftover: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                leftover.append(item)
        if leftover:
            _deliver(leftover, [CommitterClosed("the group committer is closed")] * len(leftover))


def _deliver(batch: Sequence[_Pending], outcomes: Sequence[Outcome]) -> None:
    """Resolve every caller: thread futures directly, asyncio ones in one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Outcome]]] = {}
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.loop is None:
            _resolve(pending, outcome)
        else:
            by_loop.setdefault(pending.loop, []).append((pending, outcome))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.warning("dropped %d results for a closed event loop", len(items))


def _resolve_all(items: list[tuple[_Pending, Outcome]]) -> None:
    for pending, outcome in items:
        _resolve(pending, outcome)


def _resolve(pending: _Pending, outcome: Outcome) -> None:
    future = pending.future
    if future.done():  # an asyncio caller that was cancelled (client went away)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
