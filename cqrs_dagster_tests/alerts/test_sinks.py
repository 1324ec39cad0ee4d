"""Alert sinks and delivery: the JSONL file sink, the generic webhook sink against a local HTTP
receiver, retries with backoff and the error after the last attempt, in-order delivery that stops
at the first failure, and the bounded queue of undelivered alerts kept as JSON between ticks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cqrs_dagster.alerts.delivery import AlertState, deliver_in_order
from cqrs_dagster.alerts.model import Alert, Level
from cqrs_dagster.alerts.sinks import (
    AlertDeliveryError,
    AlertSink,
    JsonlAlertSink,
    RetryingSink,
    WebhookAlertSink,
)
from cqrs_dagster_tests.alerts.receiver import Receiver, running_receiver

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def alert(n: int = 0, level: Level = Level.WARN, previous: Level | None = None) -> Alert:
    return Alert(
        source=f"check:orders/c{n}",
        level=level,
        previous_level=previous,
        title=f"{level}: c{n}",
        text=f"text {n}",
        occurred_at=T0,
        metadata={"lag_seconds": 42.5},
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as rec:
        yield rec


class FlakySink(AlertSink):
    """Fails the sends whose (1-based) call numbers are in ``failing``, records the rest."""

    name = "flaky"

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.calls = 0
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.calls += 1
        if self.calls in self.failing:
            raise ConnectionError(f"down (call {self.calls})")
        self.sent.append(alert)


def test_jsonl_sink_appends_one_line_per_alert_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data" / "alerts.jsonl"
    sink = JsonlAlertSink(path)
    with caplog.at_level(logging.INFO, logger="cqrs_dagster.alerts"):
        sink.send(alert(1, Level.ERROR))
        sink.send(alert(1, Level.OK, Level.ERROR))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["level"], d["previousLevel"], d["recovery"]) for d in lines] == [
        ("ERROR", None, False),
        ("OK", "ERROR", True),
    ]
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.INFO]
    assert "check:orders/c1" in caplog.records[0].getMessage()


def test_webhook_sink_posts_the_alert_json(receiver: Receiver) -> None:
    WebhookAlertSink(receiver.url + "/hook").send(alert(2, Level.OK, Level.WARN))
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.body == alert(2, Level.OK, Level.WARN).to_dict()
    assert request.body["recovery"] is True


def test_webhook_500_is_retried_then_fails_with_a_clear_error(receiver: Receiver) -> None:
    receiver.status = 500
    sleeps: list[float] = []
    sink = RetryingSink(
        WebhookAlertSink(receiver.url), attempts=3, backoff_seconds=0.01, sleep=sleeps.append
    )
    with pytest.raises(AlertDeliveryError, match=r"webhook sink .* after 3 attempts: .*HTTP 500"):
        sink.send(alert(3))
    assert receiver.attempts() == 3
    assert sleeps == [0.01, 0.02]


def test_retry_succeeds_once_the_transport_recovers() -> None:
    inner = FlakySink(failing={1, 2})
    RetryingSink(inner, attempts=3, backoff_seconds=0, sleep=lambda s: None).send(alert(4))
    assert inner.calls == 3 and inner.sent == [alert(4)]


def test_delivery_stops_at_the_first_failure_and_keeps_order() -> None:
    inner = FlakySink(failing={2})  # the first alert goes through, the second fails once
    alerts = [alert(0), alert(1), alert(2)]
    outcome = deliver_in_order(inner, alerts)
    assert outcome.delivered == [alert(0)]
    assert outcome.remaining == [alert(1), alert(2)]
    assert isinstance(outcome.error, ConnectionError)
    again = deliver_in_order(inner, outcome.remaining)
    assert again.error is None and inner.sent == alerts


def test_state_round_trips_and_the_queue_is_bounded() -> None:
    state = AlertState(levels={"check:orders/c0": Level.WARN})
    assert state.enqueue([alert(i) for i in range(5)], max_pending=3) == 2
    assert [a.source for a in state.pending] == [f"check:orders/c{i}" for i in (2, 3, 4)]
    back = AlertState.from_json(state.to_json())
    assert back == state and back.dropped == 2


def test_empty_cursor_is_a_fresh_state_and_a_foreign_one_is_refused() -> None:
    assert AlertState.from_json(None) == AlertState()
    with pytest.raises(ValueError, match="not an alert state"):
        AlertState.from_json('{"heads": [1, 2]}')
