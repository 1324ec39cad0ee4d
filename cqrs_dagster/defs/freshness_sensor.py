"""``read_model_freshness_sensor``: the lag checks, evaluated every minute in the sensor's tick.

Each tick reads the bus heads, every read model's checkpoint and the outbox's oldest unpublished
event (:func:`.lag_checks.lag_results`: the ``<read_model>_freshness_lag`` checks and
``outbox_relay_lag``, under their check names and rules) and records the evaluations with the
tick (``SensorResult(asset_events=...)``): the UI shows them on each asset's checks, the alert
sensor reads them like any other, and no run is launched for them (a run per minute was a
process launch of ~4 CPU-s on 2 cores, and a Runs page full of check runs on an idle platform).
``check_read_model_freshness`` still evaluates the same checks in a run, on demand.

While a following run evaluates them itself between its passes (stamped within
``FRESHNESS_STAMP_MAX_AGE_SECONDS``), the tick skips, saying which run does. A following run stuck
in a pass stops stamping, and the sensor then reports the lag that causes.
"""

import time

import dagster as dg

from .follow import FRESHNESS_STAMP_MAX_AGE_SECONDS, checking_follow_run
from .lag_checks import evaluation, lag_results
from .resources import PlatformResource

FRESHNESS_SENSOR = "read_model_freshness_sensor"
FRESHNESS_INTERVAL_SECONDS = 60


@dg.sensor(
    name=FRESHNESS_SENSOR,
    minimum_interval_seconds=FRESHNESS_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every minute: the freshness-lag checks (each read model and the outbox relay), "
        "evaluated in the tick without a run, so a stuck sensor or a dead relay is caught. "
        "Skipped while a following projection run evaluates them itself between passes."
    ),
)
def read_model_freshness_sensor(
    context: dg.SensorEvaluationContext, platform: PlatformResource
) -> dg.SensorResult | dg.SkipReason:
    follower = checking_follow_run(context.instance, time.time())
    if follower is not None:
        return dg.SkipReason(
            f"following run {follower.run_id} evaluates the lag checks itself (within the last "
            f"{FRESHNESS_STAMP_MAX_AGE_SECONDS:g} s)"
        )
    with platform.bus() as bus:
        results = lag_results(platform.settings(), bus, platform.tables())
    return dg.SensorResult(asset_events=[evaluation(key, result) for key, result in results])
