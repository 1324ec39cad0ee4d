"""One alert per incident instead of one per read model.

One stalled pipeline makes every read model's freshness policy and lag check go WARN/ERROR at
about the same time. :func:`group_read_model_alerts` folds the per-source alerts of one tick that
concern read models (sources ``check:<read model>/<check>`` and ``freshness:<read model>``) into
at most one alert for the incident ``incident:read_models``:

- when the first read model turns unhealthy, one alert naming every affected read model and the
  likely cause;
- while the incident lasts, another alert only when it gets worse (WARN -> ERROR) or spreads to
  a read model not named yet;
- when every read model is healthy again, one recovery.

Other sources (runs, sensors, backoff) pass through unchanged. Pure: the caller supplies the cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from .model import Alert, Level

INCIDENT_SOURCE = "incident:read_models"
READ_MODEL_KINDS = ("check:", "freshness:")
_RANK = {Level.OK: 0, Level.WARN: 1, Level.ERROR: 2}


def read_model_of(source: str) -> str | None:
    """``check:orders/orders_freshness_lag`` and ``freshness:orders`` -> ``orders``."""
    for kind in READ_MODEL_KINDS:
        if source.startswith(kind):
            return source[len(kind) :].split("/", 1)[0]
    return None


def affected(levels: Mapping[str, Level]) -> dict[str, Level]:
    """Worst level per read model that is not OK."""
    out: dict[str, Level] = {}
    for source, level in levels.items():
        model = read_model_of(source)
        if model is None or level is Level.OK:
            continue
        if _RANK[level] > _RANK[out.get(model, Level.OK)]:
            out[model] = level
    return out


def worst(levels: Iterable[Level]) -> Level:
    return max(levels, key=lambda lv: _RANK[lv], default=Level.OK)


def group_read_model_alerts(
    alerts: Iterable[Alert],
    previous: Mapping[str, Level],
    current: Mapping[str, Level],
    cause: str,
) -> list[Alert]:
    """The tick's alerts with the read-model ones folded into at most one incident alert."""
    alerts = list(alerts)
    passthrough = [a for a in alerts if read_model_of(a.source) is None]
    grouped = [a for a in alerts if read_model_of(a.source) is not None]
    if not grouped:
        return passthrough
    before, now = affected(previous), affected(current)
    was, is_ = worst(before.values()), worst(now.values())
    at: datetime = max(a.occurred_at for a in grouped)
    details = "\n".join(f"- {a.title}: {a.text}" for a in grouped)
    # The grouped alerts' own metadata (e.g. a lag check's lag_seconds), then the incident's.
    merged: dict[str, object] = {}
    for a in grouped:
        merged.update(a.metadata)
    incident: Alert | None = None
    if is_ is Level.OK:
        if was is not Level.OK:
            incident = Alert(
                source=INCIDENT_SOURCE,
                level=Level.OK,
                previous_level=was,
                title=f"RECOVERED: read models healthy again ({', '.join(sorted(before))})",
                text=f"Every read model is healthy again.\n{details}",
                occurred_at=at,
                metadata={**merged, "read_models": sorted(before), "cause": cause},
            )
    elif _RANK[is_] > _RANK[was] or set(now) - set(before):
        names = ", ".join(f"{m} ({lv})" for m, lv in sorted(now.items()))
        if was is Level.OK:
            title = f"{is_}: read models unhealthy: {', '.join(sorted(now))}"
        else:
            title = f"{is_}: incident grew: {', '.join(sorted(now))}"
        incident = Alert(
            source=INCIDENT_SOURCE,
            level=is_,
            previous_level=None if was is Level.OK else was,
            title=title,
            text=f"Affected read models: {names}.\nLikely cause: {cause}.\n{details}",
            occurred_at=at,
            metadata={
                **merged,
                "read_models": sorted(now),
                "levels": {m: lv.value for m, lv in sorted(now.items())},
                "cause": cause,
            },
        )
    return [*passthrough, *([incident] if incident else [])]
