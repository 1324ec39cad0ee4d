"""A step that waits for a pool slot sleeps between its claims instead of spinning on a core.

Every Delta writer step claims the ``cqrs_delta_writer`` pool (limit 1). A step whose claim is
refused is tried again on Dagster's backoff (1 s, growing to 15 s); in between, the in-process
executor asks ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` how long to
sleep. Dagster 1.13 returns ``min([0, *waits])`` there, never more than 0, so the executor's loop
never sleeps: a run waiting for the pool spins on a core for as long as it waits (measured: 85-90%
of a core for a following run's successor that waited 15 s; Dagster's own fix,
dagster-io/dagster#20367, was closed unmerged). Maintenance, rebuild, recompute and redrive runs
wait so for a following run's current pass.

:func:`sleep_between_pool_claims` replaces that method with one that returns the time to the
step's next claim, at most ``MAX_SLEEP_SECONDS`` (a run cancelled meanwhile is looked at again
within that). When a step claims is Dagster's own, unchanged: only the spinning in between goes.
It is applied only while Dagster's method has the bug (its source returns ``min([0, ...])``), so a
Dagster that fixes it is left alone.
"""

from __future__ import annotations

import inspect
import logging
import time

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

log = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 1.0
_BUGGY = "min([0,"
# Dagster's own method, as imported (nothing else replaces it).
DAGSTERS_OWN = InstanceConcurrencyContext.interval_to_next_pending_claim_check


def _interval_to_next_claim(self: InstanceConcurrencyContext) -> float:
    """Seconds until the earliest pending claim may be tried again (0: now), at most
    MAX_SLEEP_SECONDS."""
    if not self.has_pending_claims():
        return 0.0
    now = time.time()
    waits = [ready_at - now for ready_at in self._pending_timeouts.values()]
    return min(max(0.0, min(waits, default=0.0)), MAX_SLEEP_SECONDS)


def dagster_spins() -> bool:
    """Whether the installed Dagster's own method never sleeps (the bug worked around here)."""
    try:
        source = inspect.getsource(DAGSTERS_OWN)
    except (OSError, TypeError):  # no source to read: leave Dagster alone
        return False
    return _BUGGY in source.replace(" ", "")


def sleep_between_pool_claims() -> bool:
    """Apply the fix (idempotent); True when it is in place."""
    if InstanceConcurrencyContext.interval_to_next_pending_claim_check is _interval_to_next_claim:
        return True
    if not dagster_spins():
        log.debug("Dagster sleeps between pool claims already: not patched")
        return False
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (  # type: ignore[method-assign]
        _interval_to_next_claim
    )
    return True
