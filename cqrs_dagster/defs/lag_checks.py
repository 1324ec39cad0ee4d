"""Lag checks. ``<read_model>_freshness_lag``: how long the oldest bus event the read model has
not applied yet has been waiting; ``outbox_relay_lag``: the same for committed, unpublished events.

WARN above ``CQRS_LAG_WARN_SECONDS`` (30 s), ERROR above ``CQRS_LAG_ERROR_SECONDS`` (60 s, the
reference's threshold). Lag is measured in seconds and in events behind, both reported as metadata.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from cqrs_dagster.eventbus.port import EventBus, PartitionInfo
from cqrs_dagster.projections import schemas
from cqrs_dagster.projections.status import projection_lag
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.settings import Settings, load_settings
from cqrs_dagster.wiring import make_write_store

from .resources import PlatformResource


def freshness_verdict(
    lag_seconds: float, warn_seconds: float, error_seconds: float
) -> tuple[bool, dg.AssetCheckSeverity]:
    """(passed, severity) for a lag: ERROR above the error threshold, WARN above the warning one."""
    if lag_seconds > error_seconds:
        return False, dg.AssetCheckSeverity.ERROR
    if lag_seconds > warn_seconds:
        return False, dg.AssetCheckSeverity.WARN
    return True, dg.AssetCheckSeverity.WARN


def freshness_check_key(table: str) -> dg.AssetCheckKey:
    """The key of a read model's ``<read_model>_freshness_lag`` check."""
    return dg.AssetCheckKey(dg.AssetKey(table), f"{table}_freshness_lag")


OUTBOX_RELAY_LAG = dg.AssetCheckKey(dg.AssetKey(schemas.RAW_EVENTS), "outbox_relay_lag")
# Every lag check (<read_model>_freshness_lag x5, outbox_relay_lag): the freshness job's
# selection. Built by the definitions below from the lag thresholds in the settings.
LAG_CHECK_KEYS = [*(freshness_check_key(t) for t in schemas.READ_MODELS), OUTBOX_RELAY_LAG]


def freshness_result(
    bus: EventBus,
    tables: TableStore,
    table: str,
    warn_seconds: float,
    error_seconds: float,
    heads: Sequence[PartitionInfo] | None = None,
) -> dg.AssetCheckResult:
    """``<table>_freshness_lag`` now: the age of the oldest bus event ``table`` has not applied
    (``heads``: the bus heads, when the caller read them once for several tables)."""
    lag = projection_lag(bus, tables, table, heads=heads)
    passed, severity = freshness_verdict(lag.lag_seconds, warn_seconds, error_seconds)
    return dg.AssetCheckResult(
        passed=passed,
        severity=severity,
        metadata={
            "lag_seconds": dg.MetadataValue.float(float(lag.lag_seconds)),
            "events_behind": dg.MetadataValue.int(lag.events_behind),
            "warn_seconds": dg.MetadataValue.float(warn_seconds),
            "error_seconds": dg.MetadataValue.float(error_seconds),
            "newest_bus_time": dg.MetadataValue.text(str(lag.newest_bus_time)),
            "newest_applied_time": dg.MetadataValue.text(str(lag.newest_applied_time)),
        },
    )


def relay_lag_result(settings: Settings) -> dg.AssetCheckResult:
    """``outbox_relay_lag`` now: the age of the oldest committed event not yet published."""
    store = make_write_store(settings)
    try:
        oldest = store.pending_events(1)
    finally:
        store.close()
    age = 0.0
    if oldest:
        age = max(0.0, (datetime.now(UTC) - oldest[0].timestamp).total_seconds())
    passed, severity = freshness_verdict(age, settings.lag_warn_seconds, settings.lag_error_seconds)
    return dg.AssetCheckResult(
        passed=passed,
        severity=severity,
        metadata={
            "oldest_unpublished_age_seconds": dg.MetadataValue.float(age),
            "oldest_unpublished_event_id": dg.MetadataValue.text(
                oldest[0].event_id if oldest else ""
            ),
        },
    )


def lag_results(
    settings: Settings, bus: EventBus, tables: TableStore
) -> list[tuple[dg.AssetCheckKey, dg.AssetCheckResult]]:
    """Every lag check now, under its check key: one read of the bus heads for every read
    model, then the outbox's oldest unpublished event (raises what the reads raise)."""
    warn, error = settings.lag_warn_seconds, settings.lag_error_seconds
    heads = bus.partitions_info()
    results = [
        (freshness_check_key(t), freshness_result(bus, tables, t, warn, error, heads))
        for t in schemas.READ_MODELS
    ]
    results.append((OUTBOX_RELAY_LAG, relay_lag_result(settings)))
    return results


def evaluation(
    key: dg.AssetCheckKey,
    result: dg.AssetCheckResult,
    *,
    description: str | None = None,
    blocking: bool = False,
) -> dg.AssetCheckEvaluation:
    """``result`` of the check ``key`` as the event Dagster records (from a run's op or a
    sensor tick)."""
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=description,
        blocking=blocking,
    )


def build_freshness_lag_check(
    table: str, warn_seconds: float, error_seconds: float
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(table),
        name=freshness_check_key(table).name,
        description=(
            f"Projection lag of {table}: WARN above {warn_seconds:g} s, ERROR above "
            f"{error_seconds:g} s behind the newest event on the bus."
        ),
    )
    def freshness_lag(platform: PlatformResource) -> dg.AssetCheckResult:
        with platform.bus() as bus:
            return freshness_result(bus, platform.tables(), table, warn_seconds, error_seconds)

    return freshness_lag


@dg.asset_check(
    asset=dg.AssetKey(schemas.RAW_EVENTS),
    name=OUTBOX_RELAY_LAG.name,
    description=(
        "Age of the oldest committed event the outbox relay has not yet published: catches a "
        "dead relay, which the bus-side lag cannot see. Same WARN / ERROR thresholds."
    ),
)
def outbox_relay_lag(platform: PlatformResource) -> dg.AssetCheckResult:
    return relay_lag_result(platform.settings())


def build_freshness_lag_checks(
    warn_seconds: float, error_seconds: float
) -> list[dg.AssetChecksDefinition]:
    return [build_freshness_lag_check(t, warn_seconds, error_seconds) for t in schemas.READ_MODELS]


@dg.definitions
def checks() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        asset_checks=[
            *build_freshness_lag_checks(settings.lag_warn_seconds, settings.lag_error_seconds),
            outbox_relay_lag,
        ]
    )
