"""A step waiting for the writer pool sleeps between its claims (cqrs_dagster.defs.pool_claims)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from cqrs_dagster.defs import pool_claims
from cqrs_dagster.defs.names import DELTA_WRITER_POOL
from cqrs_dagster_tests.fixtures.pools import HOLDER, POOLED, freed_after, hold_the_pool, one_writer


@pytest.fixture
def pooled() -> Iterator[dg.DagsterInstance]:
    """An instance whose pools have a limit of 1, as dagster.yaml sets for `cqrs up`."""
    with dg.instance_for_test(overrides=POOLED) as inst:
        yield inst


def test_the_pinned_dagster_spins_and_the_fix_is_in_place() -> None:
    """A tripwire: when a Dagster release sleeps between pool claims itself, this fails, and
    pool_claims.py can go."""
    assert pool_claims.dagster_spins()
    assert pool_claims.sleep_between_pool_claims()
    method = InstanceConcurrencyContext.interval_to_next_pending_claim_check
    assert method is pool_claims._interval_to_next_claim


def test_the_code_location_applies_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from cqrs_dagster.definitions import defs

    monkeypatch.setattr(
        InstanceConcurrencyContext, "interval_to_next_pending_claim_check", pool_claims.DAGSTERS_OWN
    )
    defs()
    method = InstanceConcurrencyContext.interval_to_next_pending_claim_check
    assert method is pool_claims._interval_to_next_claim


def test_a_refused_claim_sleeps_until_its_next_try_at_most_a_second(
    pooled: dg.DagsterInstance,
) -> None:
    pool_claims.sleep_between_pool_claims()
    hold_the_pool(pooled)
    run = dg.DagsterRun(job_name="writer_job", run_id="waiter")
    with InstanceConcurrencyContext(pooled, run) as context:
        assert context.interval_to_next_pending_claim_check() == 0.0  # nothing pending
        assert not context.claim(DELTA_WRITER_POOL, "writer")
        first = context.interval_to_next_pending_claim_check()
        assert 0.5 < first <= pool_claims.MAX_SLEEP_SECONDS  # Dagster's first backoff is 1 s
        time.sleep(first)
        assert context.interval_to_next_pending_claim_check() == pytest.approx(0.0, abs=0.05)
        pooled.event_log_storage.free_concurrency_slots_for_run(HOLDER)
        assert context.claim(DELTA_WRITER_POOL, "writer")
        assert context.interval_to_next_pending_claim_check() == 0.0


def test_a_run_waiting_for_the_pool_sleeps_then_runs_once_the_slot_is_free(
    pooled: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fix the executor's loop asks for its sleep hundreds of thousands of times
    in the 2.5 s wait; with it, a few times per claim try."""
    pool_claims.sleep_between_pool_claims()
    asked: list[float] = []

    def counted(self: InstanceConcurrencyContext) -> float:
        seconds = pool_claims._interval_to_next_claim(self)
        asked.append(seconds)
        return seconds

    monkeypatch.setattr(InstanceConcurrencyContext, "interval_to_next_pending_claim_check", counted)
    hold_the_pool(pooled)
    with freed_after(pooled, 2.5) as freed:
        result = one_writer.execute_in_process(instance=pooled, raise_on_error=False)
    assert result.success
    assert result.output_for_node("write_something") >= freed[0]
    assert 2 <= len(asked) <= 40, len(asked)
    assert max(asked) <= pool_claims.MAX_SLEEP_SECONDS
