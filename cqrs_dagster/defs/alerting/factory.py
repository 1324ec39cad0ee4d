"""Builds the alert sink that ``CQRS_ALERT_SINK`` names, wrapped in retries with backoff."""

from __future__ import annotations

from cqrs_dagster.alerts.sinks import AlertSink, JsonlAlertSink, RetryingSink, WebhookAlertSink
from cqrs_dagster.settings import Settings

from .slack import SlackAlertResource, SlackAlertSink
from .teams import TeamsAlertSink


def make_alert_sink(settings: Settings) -> AlertSink:
    """log (JSONL file + log), webhook (generic JSON), teams or slack; raises SettingsError when
    the chosen sink's settings are missing."""
    inner: AlertSink
    if settings.alert_sink == "log":
        inner = JsonlAlertSink(settings.alert_log_path)
    elif settings.alert_sink in ("webhook", "teams"):
        settings.require("alert_webhook_url")
        assert settings.alert_webhook_url is not None
        url = settings.alert_webhook_url.get_secret_value()
        inner = WebhookAlertSink(url) if settings.alert_sink == "webhook" else TeamsAlertSink(url)
    else:
        settings.require("alert_slack_token", "alert_slack_channel")
        assert settings.alert_slack_token is not None and settings.alert_slack_channel
        resource = SlackAlertResource(
            token=settings.alert_slack_token.get_secret_value(),
            base_url=settings.alert_slack_base_url,
        )
        inner = SlackAlertSink(resource, settings.alert_slack_channel)
    return RetryingSink(
        inner,
        attempts=settings.alert_retry_attempts,
        backoff_seconds=settings.alert_retry_backoff_seconds,
    )
