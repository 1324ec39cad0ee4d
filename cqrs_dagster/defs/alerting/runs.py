"""``run_failure_alerts_sensor``: a failed run of any job of the code location (projection, follow,
maintenance, rebuild, redrive, audits, checks) becomes an alert through the sink ``CQRS_ALERT_SINK``
names, with the job, the kind of Delta writer it is, the run id and the error."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from cqrs_dagster.alerts.model import Alert, Level

from ..names import WRITER_TAG
from ..resources import PlatformResource
from .factory import make_alert_sink

SENSOR_NAME = "run_failure_alerts_sensor"


def run_failure_alert(run: dg.DagsterRun, message: str | None, at: datetime) -> Alert:
    kind = run.tags.get(WRITER_TAG)
    what = f"{kind} job {run.job_name}" if kind else f"job {run.job_name}"
    return Alert(
        source=f"run:{run.job_name}",
        level=Level.ERROR,
        previous_level=None,
        title=f"ERROR: run of {what} failed",
        text=(
            f"Run {run.run_id} of {what} failed: {message or 'no error message'}. "
            "Its logs are in the Dagster UI (Runs)."
        ),
        occurred_at=at,
        metadata={
            "run_id": run.run_id,
            "job": run.job_name,
            **({"writer": kind} if kind else {}),
            **(
                {"sensor": run.tags["dagster/sensor_name"]}
                if "dagster/sensor_name" in run.tags
                else {}
            ),
        },
    )


@dg.run_failure_sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts (CQRS_ALERT_SINK) on every failed run of every job of this code location. A tick "
        "whose delivery fails is retried (the run stays unalerted until it succeeds)."
    ),
)
def run_failure_alerts_sensor(
    context: dg.RunFailureSensorContext, platform: PlatformResource
) -> None:
    event = context.failure_event
    data = event.job_failure_data
    error = data.error if data is not None else None
    message = error.message.strip() if error is not None else event.message
    alert = run_failure_alert(context.dagster_run, message, datetime.now(UTC))
    make_alert_sink(platform.settings()).send(alert)


@dg.definitions
def run_alert_sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[run_failure_alerts_sensor])
