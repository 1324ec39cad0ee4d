"""``read_model_alerts_sensor``: asset-check results and freshness states of the read models
become alerts, once per change of level, with a recovery alert when healthy again.

Read-model alerts are grouped (cqrs_dagster/alerts/incidents.py): one alert per incident naming
the affected read models and the likely cause (:func:`likely_cause`: a failing projection run,
the event sensor failing or stopped, or nothing reaching the bus: the relay), then one recovery.
The same tick also watches every sensor's latest tick (``sensor:<name>``: ERROR while its ticks
fail) and the event sensor's backoff after failed projection runs (``projection:backoff``).
Failed runs of every job are alerted by ``run_failure_alerts_sensor`` (runs.py).

Each tick reads the latest finished evaluation of every asset check on a read model and every
read model's freshness state (recorded by the freshness daemon for its FreshnessPolicy), runs
the pure :func:`cqrs_dagster.alerts.model.transitions` against the levels kept in the cursor
(JSON), and delivers the new alerts, oldest first, through the sink ``CQRS_ALERT_SINK`` names.
A tick never fails: alerts a sink could not deliver stay queued in the cursor (bounded) and are
retried on the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import dagster as dg

from cqrs_dagster.alerts.delivery import AlertState, deliver_in_order
from cqrs_dagster.alerts.incidents import group_read_model_alerts
from cqrs_dagster.alerts.model import Level, Observation, transitions
from cqrs_dagster.projections import schemas

from ..lag_checks import freshness_check_key
from ..resources import PlatformResource
from ..sensors import SENSOR_NAME as EVENTS_SENSOR
from ..sensors import failure_streak
from .dagster_state import (
    CheckEvaluationView,
    FreshnessView,
    SensorTickView,
    freshness_states,
    latest_check_evaluations,
    latest_sensor_ticks,
)
from .factory import make_alert_sink

SENSOR_NAME = "read_model_alerts_sensor"
INTERVAL_SECONDS = 15
SENSOR_STALE_SECONDS = 180  # the event sensor ticks every few seconds
FRESHNESS_LEVELS = {"PASS": Level.OK, "WARN": Level.WARN, "FAIL": Level.ERROR}
READ_MODEL_KEYS = [dg.AssetKey(t) for t in schemas.READ_MODELS]


def watched_check_keys(repository_def: dg.RepositoryDefinition | None) -> list[dg.AssetCheckKey]:
    """Every asset check on a read model: the conventional ``<read_model>_freshness_lag`` ones
    plus whatever checks the code location defines on the read models."""
    keys = {freshness_check_key(k.path[-1]) for k in READ_MODEL_KEYS}
    if repository_def is not None:
        keys.update(repository_def.asset_checks_defs_by_key)
        for assets_def in set(repository_def.assets_defs_by_key.values()):
            keys.update(assets_def.check_keys)
    watched = set(READ_MODEL_KEYS)
    return sorted((k for k in keys if k.asset_key in watched), key=lambda k: k.to_user_string())


def check_source(key: dg.AssetCheckKey) -> str:
    return f"check:{key.asset_key.to_user_string()}/{key.name}"


def check_observation(view: CheckEvaluationView) -> Observation:
    asset = view.key.asset_key.to_user_string()
    if view.outcome == "passed":
        level, verdict = Level.OK, "passed"
    elif view.outcome == "execution_failed":
        level, verdict = Level.ERROR, "could not execute"
    else:
        level = Level.ERROR if view.severity == dg.AssetCheckSeverity.ERROR else Level.WARN
        verdict = f"failed with severity {view.severity.value}"
    text = f"Asset check {view.key.name} on {asset} {verdict}."
    if view.description:
        text += f" {view.description}"
    return Observation(
        source=check_source(view.key),
        level=level,
        subject=f"asset check {view.key.name} on {asset}",
        text=text,
        observed_at=view.evaluated_at,
        metadata={**view.metadata, **({"run_id": view.run_id} if view.run_id else {})},
    )


def freshness_observation(view: FreshnessView) -> Observation | None:
    """PASS/WARN/FAIL map to OK/WARN/ERROR; UNKNOWN and NOT_APPLICABLE say nothing."""
    level = FRESHNESS_LEVELS.get(view.state)
    if level is None:
        return None
    asset = view.asset_key.to_user_string()
    return Observation(
        source=f"freshness:{asset}",
        level=level,
        subject=f"freshness of {asset}",
        text=f"The freshness policy of {asset} is {view.state} since {view.updated_at.isoformat()}.",
        observed_at=view.updated_at,
        metadata={"freshness_state": view.state},
    )


def sensor_tick_observation(view: SensorTickView) -> Observation:
    """A sensor whose latest tick failed is ERROR; a successful or skipped tick is OK."""
    failed = view.status == "FAILURE"
    text = (
        f"The latest tick of sensor {view.name} failed at {view.at.isoformat()}: {view.error}"
        if failed
        else f"Sensor {view.name} ticks again ({view.status} at {view.at.isoformat()})."
    )
    return Observation(
        source=f"sensor:{view.name}",
        level=Level.ERROR if failed else Level.OK,
        subject=f"sensor {view.name}",
        text=text,
        observed_at=view.at,
        metadata={"tick_status": view.status, "running": view.running},
    )


def backoff_observation(instance: dg.DagsterInstance) -> Observation:
    streak = failure_streak(instance)
    now = datetime.now(UTC)
    if not streak.backoff_seconds:
        return Observation(
            source="projection:backoff",
            level=Level.OK,
            subject="projection runs",
            text="Projection runs succeed again; the event sensor requests runs normally.",
            observed_at=now,
        )
    return Observation(
        source="projection:backoff",
        level=Level.ERROR,
        subject="projection runs (backing off)",
        text=(
            f"{streak.failures} projection runs failed in a row (last: {streak.last_run_id}); "
            f"the event sensor retries only every {streak.backoff_seconds:.0f} s until one "
            "succeeds. Read the failed run's logs in the Dagster UI."
        ),
        observed_at=now,
        metadata={"failures": streak.failures, "run_id": streak.last_run_id or ""},
    )


def likely_cause(instance: dg.DagsterInstance) -> str:
    """The most likely reason read models fall behind, from Dagster's own records."""
    streak = failure_streak(instance)
    if streak.failures:
        return (
            f"failing run: {streak.failures} projection run(s) failed in a row "
            f"(last: {streak.last_run_id})"
        )
    ticks = latest_sensor_ticks(instance, [EVENTS_SENSOR])
    view = ticks.get(EVENTS_SENSOR)
    if view is not None:
        if not view.running:
            return f"sensor: {EVENTS_SENSOR} is stopped"
        if view.status == "FAILURE":
            return f"sensor: {EVENTS_SENSOR} ticks fail: {view.error}"
        age = (datetime.now(UTC) - view.at).total_seconds()
        if age > SENSOR_STALE_SECONDS:
            return f"sensor: {EVENTS_SENSOR} has not ticked for {age:.0f} s (is the daemon up?)"
        if view.skip_reason and "at the bus heads" in view.skip_reason:
            return (
                "relay: the read models are at the bus heads, so no new events reach the bus "
                "(check the outbox relay and the write side)"
            )
    return "unknown: no failed projection run and no failing sensor; see the checks below"


def observe(
    instance: dg.DagsterInstance,
    check_keys: Sequence[dg.AssetCheckKey],
    sensor_names: Sequence[str] | None = None,
) -> list[Observation]:
    """Current observations, checks first, in a stable order; then sensors and the backoff."""
    checks = latest_check_evaluations(instance, check_keys)
    observations = [check_observation(checks[k]) for k in check_keys if k in checks]
    fresh = freshness_states(instance, READ_MODEL_KEYS)
    for key in READ_MODEL_KEYS:
        obs = freshness_observation(fresh[key]) if key in fresh else None
        if obs is not None:
            observations.append(obs)
    ticks = latest_sensor_ticks(instance, sensor_names)
    observations.extend(sensor_tick_observation(ticks[n]) for n in sorted(ticks))
    observations.append(backoff_observation(instance))
    return observations


def tick(
    state: AlertState,
    observations: Iterable[Observation],
    platform: PlatformResource,
    cause: str = "unknown",
) -> tuple[AlertState, str]:
    """One tick after observing: transitions, grouping, queue, delivery. Never raises."""
    previous = dict(state.levels)
    alerts, state.levels = transitions(state.levels, observations)
    alerts = group_read_model_alerts(alerts, previous, state.levels, cause)
    dropped = state.enqueue(alerts)
    summary = f"{len(alerts)} new alert(s)"
    if dropped:
        summary += f"; queue full, dropped the {dropped} oldest undelivered alert(s)"
    if not state.pending:
        return state, summary
    try:
        sink = make_alert_sink(platform.settings())
    except Exception as exc:  # bad alert settings: keep everything queued
        return state, f"{summary}; cannot build the alert sink: {exc}"
    outcome = deliver_in_order(sink, state.pending)
    state.pending = outcome.remaining
    summary += f"; delivered {len(outcome.delivered)} via {sink.name}"
    if outcome.error is not None:
        summary += f"; {len(outcome.remaining)} queued for the next tick: {outcome.error}"
    return state, summary


def build_alerts_sensor(interval_seconds: int = INTERVAL_SECONDS) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Alerts (CQRS_ALERT_SINK: log, webhook, Teams or Slack) once per incident when read "
            "models' asset checks or freshness policies turn WARN or ERROR, naming them and the "
            "likely cause, and once when they recover; also when a sensor's ticks fail and when "
            "projection runs back off. Undelivered alerts are retried."
        ),
    )
    def read_model_alerts_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformResource
    ) -> dg.SkipReason:
        try:
            state = AlertState.from_json(context.cursor)
        except (ValueError, KeyError, TypeError) as exc:
            context.log.error("alert state in the cursor is unreadable, starting afresh: %s", exc)
            state = AlertState()
        repo = context.repository_def
        sensor_names = [s.name for s in repo.sensor_defs] if repo is not None else None
        try:
            observations = observe(context.instance, watched_check_keys(repo), sensor_names)
            cause = likely_cause(context.instance)
        except Exception as exc:
            context.log.exception("could not read check and freshness state")
            return dg.SkipReason(f"could not read check and freshness state: {exc}")
        state, summary = tick(state, observations, platform, cause)
        context.update_cursor(state.to_json())
        if state.pending:
            context.log.warning("alerts: %s", summary)
        else:
            context.log.info("alerts: %s", summary)
        return dg.SkipReason(summary)

    return read_model_alerts_sensor


@dg.definitions
def alert_sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_alerts_sensor()])
