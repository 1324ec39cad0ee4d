"""Microsoft Teams sink: posts each alert as an Adaptive Card through dagster-msteams.

``MSTeamsResource(hook_url=...).get_client()`` gives dagster-msteams' ``TeamsClient``; a Teams
Workflows (Power Automate) webhook takes an Adaptive Card message, a legacy Office 365 connector
URL (``*.webhook.office.com``) a hero card, which the client tells apart.
"""

from __future__ import annotations

from typing import Any

from dagster_msteams import Card, MSTeamsResource
from dagster_msteams.adaptive_card import AdaptiveCard

from cqrs_dagster.alerts.model import Alert, Level
from cqrs_dagster.alerts.sinks import AlertSink, log_alert

COLORS = {Level.OK: "Good", Level.WARN: "Warning", Level.ERROR: "Attention"}
MAX_FACTS = 12


def alert_facts(alert: Alert) -> list[dict[str, str]]:
    facts = [
        {"title": "Source", "value": alert.source},
        {"title": "Level", "value": alert.level.value},
        {"title": "Previous level", "value": str(alert.previous_level or "-")},
        {"title": "Occurred at", "value": alert.occurred_at.isoformat()},
    ]
    for name, value in list(alert.metadata.items())[: MAX_FACTS - len(facts)]:
        facts.append({"title": name, "value": str(value)})
    return facts


def adaptive_card_payload(alert: Alert) -> dict[str, Any]:
    """The Teams message: dagster-msteams' Adaptive Card envelope with a title, text and facts."""
    card = AdaptiveCard()
    payload: dict[str, Any] = card.payload
    payload["attachments"][0]["content"]["body"] = [
        {
            "type": "TextBlock",
            "text": alert.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": COLORS[alert.level],
            "wrap": True,
        },
        {"type": "TextBlock", "text": alert.text, "wrap": True},
        {"type": "FactSet", "facts": alert_facts(alert)},
    ]
    return payload


def hero_card_payload(alert: Alert) -> dict[str, Any]:
    """For a legacy connector webhook: a hero card holding the title and the text."""
    card = Card()  # type: ignore[no-untyped-call]
    card.add_attachment(text_message=f"{alert.title}\n\n{alert.text}")
    payload: dict[str, Any] = card.payload
    return payload


class TeamsAlertSink(AlertSink):
    """Posts each alert to a Teams incoming webhook; a non-2xx answer raises."""

    name = "teams"

    def __init__(self, hook_url: str, *, timeout_seconds: float = 10.0) -> None:
        self.resource = MSTeamsResource(hook_url=hook_url, timeout=timeout_seconds)

    def send(self, alert: Alert) -> None:
        client = self.resource.get_client()
        legacy = client.is_legacy_webhook()
        client.post_message(hero_card_payload(alert) if legacy else adaptive_card_payload(alert))
        log_alert(alert)
