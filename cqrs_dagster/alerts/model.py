"""Alert levels, observations, alerts and the pure transition function.

A *source* is one thing whose health is watched, named ``<kind>:<subject>``: an asset check
(``check:orders/orders_freshness_lag``) or a read model's freshness policy (``freshness:orders``).
Each observation gives a source's current level; :func:`transitions` compares it with the level
last seen and yields one alert per change:

- any change of level is an alert: OK->WARN, OK->ERROR, WARN->ERROR, ERROR->WARN;
- any non-OK level -> OK is a *recovery* alert;
- an unchanged level sends nothing, and the first observation of a source sends nothing if it is OK
  (a first WARN or ERROR is an alert whose previous level is None);
- a source not observed this time keeps its last level (no news is not a recovery).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    """A source's health, worst last."""

    OK = "OK"
    WARN = "WARN"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Observation:
    """The current level of one source, with what to tell a human about it."""

    source: str
    level: Level
    subject: str  # e.g. "asset check orders_freshness_lag on orders"
    text: str
    observed_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """One change of a source's level, ready to deliver."""

    source: str
    level: Level
    previous_level: Level | None
    title: str
    text: str
    occurred_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_recovery(self) -> bool:
        return self.level is Level.OK and self.previous_level not in (None, Level.OK)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the generic webhook body, the JSONL line and the cursor entry."""
        return {
            "source": self.source,
            "level": self.level.value,
            "previousLevel": self.previous_level.value if self.previous_level else None,
            "recovery": self.is_recovery,
            "title": self.title,
            "text": self.text,
            "occurredAt": self.occurred_at.isoformat(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        previous = data.get("previousLevel")
        return cls(
            source=str(data["source"]),
            level=Level(data["level"]),
            previous_level=Level(previous) if previous else None,
            title=str(data["title"]),
            text=str(data["text"]),
            occurred_at=datetime.fromisoformat(str(data["occurredAt"])),
            metadata=dict(data.get("metadata") or {}),
        )


def alert_title(level: Level, previous: Level | None, subject: str) -> str:
    if level is Level.OK:
        return f"RECOVERED: {subject} is healthy again (was {previous})"
    if previous is Level.ERROR:
        return f"WARN: {subject} improved from ERROR to WARN"
    return f"{level}: {subject}"


def transitions(
    previous: Mapping[str, Level], observations: Iterable[Observation]
) -> tuple[list[Alert], dict[str, Level]]:
    """(alerts to send, new states) for the latest observations against the last known levels.

    Pure: the same inputs always give the same outputs. With several observations of one source,
    each is compared with the one before it, in order.
    """
    states = dict(previous)
    alerts: list[Alert] = []
    for obs in observations:
        before = states.get(obs.source)
        states[obs.source] = obs.level
        if obs.level is before or (before is None and obs.level is Level.OK):
            continue
        alerts.append(
            Alert(
                source=obs.source,
                level=obs.level,
                previous_level=before,
                title=alert_title(obs.level, before, obs.subject),
                text=obs.text,
                occurred_at=obs.observed_at,
                metadata=dict(obs.metadata),
            )
        )
    return alerts, states
