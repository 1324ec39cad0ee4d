"""The WriteStore port: aggregate state plus its outbox, written in one atomic write.

A save is one :class:`Save` record: the aggregate's new state, the version it must replace, its
events, and the command id with its result.

Group commit goes through :meth:`WriteStore.batch`: a :class:`WriteBatch` loads aggregates and
command results and takes saves, each checked like :meth:`WriteStore.save` (version, command id)
against the store AND the batch's earlier saves, so commands decided one after another in a batch
see each other's writes. A save that fails its check raises for that save alone and writes nothing.

The default batch (used by the Cosmos store) passes every save straight to ``save()``: each is its
own atomic write and nothing is gained but correctness. An adapter overrides :meth:`batch` to make
the whole batch ONE durable commit (SQLite: one ``BEGIN IMMEDIATE`` .. ``COMMIT``); the saves of a
batch are durable once its ``with`` block exits normally, and none is if it raises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cqrs_dagster.domain.events import EventEnvelope


@dataclass(slots=True)
class StoredAggregate:
    """An aggregate's current JSON state and version.

    A value, never changed once built: slotted, not frozen (see
    :class:`~cqrs_dagster.domain.events.EventEnvelope`)."""

    aggregate_type: str
    aggregate_id: str
    version: int
    state: dict[str, Any]


AggregateKey = tuple[str, str]  # (aggregate_type, aggregate_id)


@dataclass(slots=True)
class Save:
    """What one command writes in one atomic save (see :meth:`WriteStore.save`).

    A value, never changed once built: slotted, not frozen (see
    :class:`~cqrs_dagster.domain.events.EventEnvelope`)."""

    aggregate: StoredAggregate
    """The aggregate's new state and version."""
    expected_version: int
    """The version the store must hold before the write (0: the aggregate must not exist)."""
    events: Sequence[EventEnvelope]
    """The new events, in version order, for the outbox."""
    command_id: str | None
    """The client's command id, recorded with ``result`` so a retry replays instead of writing
    again. None when the server made the id: no client holds it, so no retry can present it,
    and the store neither checks nor records it (the events still carry it as causation id)."""
    result: Mapping[str, Any]
    """What the command returned, recorded under ``command_id`` (when there is one)."""

    @property
    def key(self) -> AggregateKey:
        """``(aggregate_type, aggregate_id)`` of the saved aggregate."""
        return (self.aggregate.aggregate_type, self.aggregate.aggregate_id)


class WriteBatch:
    """Loads and saves of one group commit; the default passes each save to ``store.save()``.

    Reads are cached for the batch and updated by its own saves (the in-batch overlay). After a
    failed save the cached entries it touched are dropped, so a later command in the batch reads
    the store afresh instead of building on a write that did not happen.
    """

    def __init__(self, store: WriteStore) -> None:
        self.store = store
        self._aggregates: dict[AggregateKey, StoredAggregate | None] = {}
        self._results: dict[str, dict[str, Any] | None] = {}

    def prefetch(self, keys: Iterable[AggregateKey], command_ids: Iterable[str]) -> None:
        """Warm the cache for the batch's aggregates and client command ids (one query each)."""
        want_keys = [k for k in dict.fromkeys(keys) if k not in self._aggregates]
        want_ids = [c for c in dict.fromkeys(command_ids) if c not in self._results]
        if want_keys:
            self._aggregates.update(self._fetch_aggregates(want_keys))
        if want_ids:
            self._results.update(self._fetch_results(want_ids))

    def load(self, aggregate_type: str, aggregate_id: str) -> StoredAggregate | None:
        key = (aggregate_type, aggregate_id)
        if key not in self._aggregates:
            self._aggregates.update(self._fetch_aggregates([key]))
        return self._aggregates[key]

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        if command_id not in self._results:
            self._results.update(self._fetch_results([command_id]))
        return self._results[command_id]

    def recheck_command_result(self, command_id: str) -> dict[str, Any] | None:
        """The command's result after a failed decision or save (a retry that raced its original).

        The default asks the store again; a batch that holds the write lock knows already.
        """
        self._results.pop(command_id, None)
        return self.command_result(command_id)

    def save(self, save: Save) -> None:
        """Like :meth:`WriteStore.save`, seen by the batch's later loads; raises for this save only."""
        key = save.key
        try:
            self._write(save)
        except BaseException:
            self._forget(key, save.command_id)
            raise
        self._aggregates[key] = save.aggregate
        if save.command_id is not None:
            self._results[save.command_id] = dict(save.result)

    # -- what an adapter overrides --------------------------------------------------------------

    def _forget(self, key: AggregateKey, command_id: str | None) -> None:
        """After a failed save: drop what it touched from the cache (the store may have moved)."""
        self._aggregates.pop(key, None)
        if command_id is not None:
            self._results.pop(command_id, None)

    def _fetch_aggregates(
        self, keys: Sequence[AggregateKey]
    ) -> dict[AggregateKey, StoredAggregate | None]:
        return {key: self.store.load(*key) for key in keys}

    def _fetch_results(self, command_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return {cid: self.store.command_result(cid) for cid in command_ids}

    def _write(self, save: Save) -> None:
        self.store.save(save)


class StoreUnavailable(RuntimeError):
    """The store could not be reached or did not answer (down, timed out, throttled).

    For a save the outcome is unknown: the write may have committed before the answer was lost.
    Retrying the command with the same command id is safe (a committed one replays its result).
    """


class WriteStore(ABC):
    """Durable home of aggregate state, the transactional outbox and processed command ids."""

    #: True when :meth:`batch` makes a whole batch ONE durable commit. Hosts group-commit only
    #: then: through the default batch, one writer thread would serialize every command's round
    #: trip (Cosmos DB), where concurrent single saves are faster.
    group_commit: bool = False

    @abstractmethod
    def load(self, aggregate_type: str, aggregate_id: str) -> StoredAggregate | None:
        """The aggregate's current state, or None if it does not exist."""

    @abstractmethod
    def save(self, save: Save) -> None:
        """In ONE atomic write: the new state, its events into the outbox and command_id -> result.

        Raises VersionConflict if the stored version is not ``save.expected_version`` (0: must
        not exist) and DuplicateCommand if ``save.command_id`` was already recorded; either way
        nothing is written. DuplicateCommand takes precedence (a raced retry then replays, not
        409s). A ``command_id`` of None (the server made it) is neither checked nor recorded.
        Raises StoreUnavailable when the store cannot be reached (every method may).
        """

    @abstractmethod
    def command_result(self, command_id: str) -> dict[str, Any] | None:
        """The result recorded for a processed command id, or None."""

    @abstractmethod
    def pending_events(self, limit: int) -> list[EventEnvelope]:
        """Up to ``limit`` unpublished events, oldest first, in version order per aggregate."""

    @abstractmethod
    def mark_published(self, events: Sequence[EventEnvelope]) -> None:
        """Mark events published (idempotent: marking twice is harmless)."""

    @contextmanager
    def batch(self) -> Iterator[WriteBatch]:
        """A group commit: saves through the batch are durable once the block exits normally.

        The default makes each save its own atomic write (see :class:`WriteBatch`).
        """
        yield WriteBatch(self)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
