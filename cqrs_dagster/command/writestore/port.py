"""The WriteStore port: aggregate state plus its outbox, written in one atomic write."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cqrs_dagster.domain.events import EventEnvelope


@dataclass(frozen=True)
class StoredAggregate:
    """An aggregate's current JSON state and version."""

    aggregate_type: str
    aggregate_id: str
    version: int
    state: dict[str, Any]


class WriteStore(ABC):
    """Durable home of aggregate state, the transactional outbox and processed command ids."""

    @abstractmethod
    def load(self, aggregate_type: str, aggregate_id: str) -> StoredAggregate | None:
        """The aggregate's current state, or None if it does not exist."""

    @abstractmethod
    def save(
        self,
        aggregate: StoredAggregate,
        expected_version: int,
        events: Sequence[EventEnvelope],
        command_id: str,
        result: Mapping[str, Any],
    ) -> None:
        """In ONE atomic write: the new state, its events into the outbox and command_id -> result.

        Raises VersionConflict if the stored version is not ``expected_version`` (0: must not
        exist) and DuplicateCommand if ``command_id`` was already recorded; either way nothing is
        written. DuplicateCommand takes precedence (a raced retry then replays, not 409s).
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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
