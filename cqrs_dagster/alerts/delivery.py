"""The alerting state kept between ticks (levels + undelivered alerts) and in-order delivery.

The state is stored as JSON (the alert sensor's cursor). Undelivered alerts stay queued, oldest
first, and are retried on the next tick; the queue is bounded, dropping the oldest when full.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import Alert, Level
from .sinks import AlertSink

MAX_PENDING = 100  # keeps the cursor small (~1 kB per alert)
STATE_VERSION = 1


@dataclass
class AlertState:
    """Last known level per source, and alerts not yet delivered (oldest first)."""

    levels: dict[str, Level] = field(default_factory=dict)
    pending: list[Alert] = field(default_factory=list)
    dropped: int = 0  # alerts dropped so far because the queue was full

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "v": STATE_VERSION,
            "levels": {k: v.value for k, v in sorted(self.levels.items())},
            "pending": [a.to_dict() for a in self.pending],
            "dropped": self.dropped,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> AlertState:
        """Parse a stored state; an empty cursor is a fresh state, a corrupt one is an error."""
        if not text:
            return cls()
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError(f"not an alert state (version {STATE_VERSION}): {text[:80]!r}")
        return cls(
            levels={str(k): Level(v) for k, v in data.get("levels", {}).items()},
            pending=[Alert.from_dict(a) for a in data.get("pending", [])],
            dropped=int(data.get("dropped", 0)),
        )

    def enqueue(self, alerts: Iterable[Alert], max_pending: int = MAX_PENDING) -> int:
        """Queue alerts behind the pending ones; returns how many old ones were dropped now."""
        self.pending.extend(alerts)
        overflow = max(0, len(self.pending) - max_pending)
        if overflow:
            del self.pending[:overflow]
            self.dropped += overflow
        return overflow


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: list[Alert]
    remaining: list[Alert]
    error: Exception | None


def deliver_in_order(sink: AlertSink, alerts: list[Alert]) -> DeliveryOutcome:
    """Send alerts oldest first; stop at the first failure so order is kept for the next try."""
    for i, alert in enumerate(alerts):
        try:
            sink.send(alert)
        except Exception as exc:
            return DeliveryOutcome(delivered=alerts[:i], remaining=alerts[i:], error=exc)
    return DeliveryOutcome(delivered=list(alerts), remaining=[], error=None)
