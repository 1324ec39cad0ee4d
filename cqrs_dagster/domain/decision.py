"""What deciding a command produces, and the context events are stamped with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .events import CURRENT_SCHEMA_VERSION, EventEnvelope
from .ids import uuid7

State = dict[str, Any]


@dataclass(slots=True)
class CommandContext:
    """Who sent the command, when, and its ids (the events' causation and correlation).

    A value, never changed once built: slotted, not frozen (see
    :class:`~cqrs_dagster.domain.events.EventEnvelope`)."""

    command_id: str
    correlation_id: str
    now: datetime
    user_id: str = "anonymous"
    source: str = "cqrs-api"

    def event(
        self,
        event_type: str,
        aggregate_type: str,
        aggregate_id: str,
        version: int,
        data: Mapping[str, Any],
    ) -> EventEnvelope:
        return EventEnvelope(
            event_id=uuid7(),
            event_type=event_type,
            aggregate_id=aggregate_id,
            aggregate_type=aggregate_type,
            version=version,
            timestamp=self.now,
            correlation_id=self.correlation_id,
            causation_id=self.command_id,
            data=dict(data),
            metadata={"userId": self.user_id, "source": self.source},
            schema_version=CURRENT_SCHEMA_VERSION,
        )


@dataclass(slots=True)
class Decision:
    """New events for one aggregate, the version they build on, and the state after them.

    A value, never changed once built: slotted, not frozen (see
    :class:`~cqrs_dagster.domain.events.EventEnvelope`)."""

    aggregate_type: str
    aggregate_id: str
    expected_version: int  # 0: the aggregate must not exist yet
    events: tuple[EventEnvelope, ...]
    state: State

    @property
    def version(self) -> int:
        return self.expected_version + len(self.events)
