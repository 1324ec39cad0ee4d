"""Slack sink: posts each alert with ``chat.postMessage`` through dagster-slack's SlackResource.

dagster-slack's ``SlackResource.get_client()`` builds a ``slack_sdk.WebClient`` on Slack's own API;
:class:`SlackAlertResource` adds ``base_url`` (``CQRS_ALERT_SLACK_BASE_URL``), which WebClient
accepts, for a proxy, an Enterprise Grid gateway or a local test receiver.
"""

from __future__ import annotations

from typing import Any

from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk.web.client import WebClient

from cqrs_dagster.alerts.model import Alert, Level
from cqrs_dagster.alerts.sinks import AlertSink, log_alert

EMOJI = {Level.OK: ":white_check_mark:", Level.WARN: ":warning:", Level.ERROR: ":rotating_light:"}
MAX_FIELDS = 10  # Slack's limit for a section's fields


class SlackAlertResource(SlackResource):
    """SlackResource whose WebClient may talk to another base URL than https://slack.com/api/."""

    base_url: str | None = Field(default=None, description="Slack Web API base URL")
    timeout_seconds: int = Field(default=10, description="HTTP timeout of one API call")

    def get_client(self) -> WebClient:
        if self.base_url is None:
            return WebClient(self.token, timeout=self.timeout_seconds)
        return WebClient(self.token, base_url=self.base_url, timeout=self.timeout_seconds)


def slack_blocks(alert: Alert) -> list[dict[str, Any]]:
    """Block Kit message: header, text, the alert's facts and metadata as fields."""
    facts = [
        f"*Source*\n{alert.source}",
        f"*Level*\n{alert.level.value} (was {alert.previous_level or '-'})",
        f"*Occurred at*\n{alert.occurred_at.isoformat()}",
        *(f"*{k}*\n{v}" for k, v in alert.metadata.items()),
    ][:MAX_FIELDS]
    return [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": alert.title[:150], "emoji": True},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{EMOJI[alert.level]} {alert.text}"},
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in facts]},
    ]


class SlackAlertSink(AlertSink):
    """Posts each alert to a channel; Slack answering not-ok (or non-200) raises SlackApiError."""

    name = "slack"

    def __init__(self, resource: SlackAlertResource, channel: str) -> None:
        self.resource = resource
        self.channel = channel

    def send(self, alert: Alert) -> None:
        self.resource.get_client().chat_postMessage(
            channel=self.channel, text=alert.title, blocks=slack_blocks(alert)
        )
        log_alert(alert)
