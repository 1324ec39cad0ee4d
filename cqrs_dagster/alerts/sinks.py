"""Where alerts go: the AlertSink port, the JSONL file sink, the generic webhook sink and retries.

The Teams and Slack sinks use dagster-msteams / dagster-slack, so they live under
``cqrs_dagster/defs/alerting/`` (the only package that imports Dagster).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import httpx

from .model import Alert, Level

log = logging.getLogger(__name__)

LOG_LEVELS = {Level.OK: logging.INFO, Level.WARN: logging.WARNING, Level.ERROR: logging.ERROR}


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered (after every retry)."""


class AlertSink(ABC):
    """Delivers one alert, or raises; delivering the same alert twice is allowed (at-least-once)."""

    name: str = "sink"

    @abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise an exception saying why it was not delivered."""


def log_alert(alert: Alert, logger: logging.Logger = log) -> None:
    """Log an alert at a level matching it: INFO for a recovery, WARNING, ERROR."""
    logger.log(LOG_LEVELS[alert.level], "alert %s: %s. %s", alert.source, alert.title, alert.text)


class JsonlAlertSink(AlertSink):
    """Appends each alert as one JSON line to a file (default ``<data_dir>/alerts.jsonl``) and logs it."""

    name = "log"

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(alert.to_dict(), sort_keys=True) + "\n")
        log_alert(alert)


class WebhookAlertSink(AlertSink):
    """POSTs the alert's JSON form (:meth:`Alert.to_dict`) to a URL; any non-2xx answer fails."""

    name = "webhook"

    def __init__(self, url: str, *, timeout_seconds: float = 10.0) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds

    def send(self, alert: Alert) -> None:
        response = httpx.post(self.url, json=alert.to_dict(), timeout=self.timeout_seconds)
        if response.is_error:
            raise AlertDeliveryError(
                f"webhook answered HTTP {response.status_code}: {response.text[:200]}"
            )


class RetryingSink(AlertSink):
    """Wraps a sink: up to ``attempts`` tries with exponential backoff, then AlertDeliveryError."""

    def __init__(
        self,
        inner: AlertSink,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def send(self, alert: Alert) -> None:
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self.inner.send(alert)
                return
            except Exception as exc:  # any failure of the transport is retried
                last = exc
                log.warning(
                    "%s sink: attempt %d/%d for alert %s failed: %s",
                    self.name,
                    attempt,
                    self.attempts,
                    alert.source,
                    exc,
                )
                if attempt < self.attempts:
                    self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AlertDeliveryError(
            f"{self.name} sink could not deliver the {alert.level} alert for {alert.source} "
            f"after {self.attempts} attempts: {last}"
        ) from last
