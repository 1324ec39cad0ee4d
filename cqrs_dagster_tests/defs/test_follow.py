"""Follow mode: one ``follow_read_models`` run applies events arriving while it runs, exactly once
(also across a crash mid-pass and a re-run), logs materializations and blocking-check evaluations
under the assets' keys and names, and a failing blocking rule stops it before the next table."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import cqrs_dagster
from cqrs_dagster.defs import follow, lag_checks
from cqrs_dagster.defs.alerting.dagster_state import latest_check_evaluations
from cqrs_dagster.defs.lag_checks import LAG_CHECK_KEYS
from cqrs_dagster.defs.names import FOLLOW_JOB, PROJECTION_JOB
from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.projections import maintenance, pipeline, schemas
from cqrs_dagster.projections.context import StepContext
from cqrs_dagster.projections.delta_io import seq_app_id, txn
from cqrs_dagster.projections.pipeline import catch_up
from cqrs_dagster.projections.tables import TableStore
from cqrs_dagster.quality import catalog
from cqrs_dagster.quality.outcome import CheckOutcome
from cqrs_dagster.settings import Settings
from cqrs_dagster.wiring import make_event_bus, make_table_store
from cqrs_dagster_tests.projections.scenario import build, snapshot

SC = build(seed=5, customers=6, orders=40)
FIRST = len(SC.events) // 2
# Columns stamped at ingest (wall clock, ingest order): they differ between any two passes.
STAMPS = {"ingested_at", "ingest_seq"}

# The blocking checks of the catalog: what a follow pass evaluates.
BLOCKING = {c.name for c in catalog.CHECKS if c.blocking}
LAG_CHECKS = {k.name for k in LAG_CHECK_KEYS}


def all_defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(cqrs_dagster.__file__).parent)


def run_follow(
    instance: dg.DagsterInstance, platform: PlatformResource, *, idle: float = 3.0
) -> dg.ExecuteInProcessResult:
    job = all_defs().resolve_job_def(FOLLOW_JOB)
    config = {"ops": {"follow_projection": {"config": {"max_seconds": 120, "idle_seconds": idle}}}}
    return job.execute_in_process(
        run_config=config, instance=instance, resources={"platform": platform}, raise_on_error=False
    )


def publish(settings: Settings, events: list[Any]) -> None:
    bus = make_event_bus(settings)
    try:
        bus.publish(events)
    finally:
        bus.close()


def normalized(tables: TableStore) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [{k: v for k, v in row.items() if k not in STAMPS} for row in rows]
        for name, rows in snapshot(tables).items()
    }


def clean_pass(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    settings = Settings(env="local", data_dir=tmp_path / "clean")
    publish(settings, SC.events)
    tables = make_table_store(settings)
    bus = make_event_bus(settings)
    try:
        catch_up(StepContext(tables, "clean"), bus, max_events=100_000)
    finally:
        bus.close()
    return normalized(tables)


def publish_after_first_raw_commit(settings: Settings, done: threading.Event) -> None:
    """The second half reaches the bus only once the run has committed its first raw batch, so
    it can only be applied by a later pass of the same run."""
    tables = make_table_store(settings)
    while not done.wait(0.02):
        if txn(tables.open(schemas.RAW_EVENTS), seq_app_id(schemas.RAW_EVENTS)) >= 0:
            publish(settings, SC.events[FIRST:])
            return


def follow_with_late_events(
    settings: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> dg.ExecuteInProcessResult:
    publish(settings, SC.events[:FIRST])
    done = threading.Event()
    late = threading.Thread(target=publish_after_first_raw_commit, args=(settings, done))
    late.start()
    try:
        return run_follow(instance, platform)
    finally:
        done.set()
        late.join()


def materialized(result: dg.ExecuteInProcessResult, table: str) -> list[dict[str, Any]]:
    return [
        {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node("follow_projection")
        if m.asset_key == dg.AssetKey(table)
    ]


def test_follow_run_applies_late_events_exactly_once_and_logs_materializations(
    settings: Settings, instance: dg.DagsterInstance, platform: PlatformResource, tmp_path: Path
) -> None:
    result = follow_with_late_events(settings, instance, platform)
    assert result.success
    assert normalized(platform.tables()) == clean_pass(tmp_path)

    raw = materialized(result, schemas.RAW_EVENTS)
    applied = [m["events_applied"] for m in raw]
    assert sum(applied) == len(SC.events)
    assert len([n for n in applied if n]) >= 2  # the late half came in a later pass of this run
    assert raw[-1]["events_behind"] == 0 and "delta_version" in raw[-1]
    for table in schemas.READ_MODELS:
        assert materialized(result, table), f"{table} was not materialized"
    # Each pass's materializations carry when it began and how long it took; passes begin
    # one after another.
    passes: dict[int, list[dict[str, Any]]] = {}
    for table in schemas.READ_MODELS:
        for m in materialized(result, table):
            passes.setdefault(m["follow_pass"], []).append(m)
    starts = []
    for n in sorted(passes):
        tables = passes[n]
        assert len({(m["pass_started_at"], m["pass_seconds"]) for m in tables}) == 1
        # (a layer's tables may run side by side: no table's work outlasts the pass)
        assert max(m["seconds"] for m in tables) <= tables[0]["pass_seconds"]
        starts.append(tables[0]["pass_started_at"])
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    started = [
        e.timestamp
        for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
    ]
    assert min(started) <= starts[0]
    checks = {
        (e.asset_key.path[-1], e.check_name, e.passed) for e in result.get_asset_check_evaluations()
    }
    # the blocking checks per pass, and the lag checks the run evaluates itself once a minute
    assert {name for _, name, _ in checks} == BLOCKING | LAG_CHECKS
    assert all(passed for _, _, passed in checks)
    # A pass logs its check evaluations after its materializations (off the path to the read
    # models): each evaluation follows a materialization of its table in the run's event log.
    logged = instance.all_logs(result.run_id)
    seen: set[str] = set()
    for entry in logged:
        event = entry.get_dagster_event() if entry.is_dagster_event else None
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            seen.add(event.asset_key.path[-1])  # type: ignore[union-attr]
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            assert event.asset_check_evaluation_data.asset_key.path[-1] in seen

    again = run_follow(instance, platform, idle=0.1)  # a re-run over caught-up tables
    assert again.success
    assert normalized(platform.tables()) == clean_pass(tmp_path / "again")


class Crash(Exception):
    pass


def test_crash_mid_pass_then_rerun_equals_a_clean_pass(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = getattr(pipeline, "project_customers")  # noqa: B009 - the name the stage calls
    calls = {"n": 0}

    def crashing(ctx: StepContext, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second pass: raw_events and orders committed, customers not
            raise Crash("killed mid-pass")
        return real(ctx, **kwargs)

    monkeypatch.setattr(pipeline, "project_customers", crashing)
    crashed = follow_with_late_events(settings, instance, platform)
    assert not crashed.success
    monkeypatch.setattr(pipeline, "project_customers", real)
    rerun = run_follow(instance, platform, idle=0.1)
    assert rerun.success
    assert normalized(platform.tables()) == clean_pass(tmp_path)


@pytest.mark.parametrize(
    ("stage", "name", "written", "not_written"),
    [
        ("raw", "raw_events_envelope_schema", schemas.RAW_EVENTS, schemas.ORDERS),
        ("silver", "orders_amounts", schemas.ORDERS, schemas.ORDER_SUMMARY),
    ],
)
def test_failing_blocking_rule_fails_the_run_before_the_next_table(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    name: str,
    written: str,
    not_written: str,
) -> None:
    def failing(*_args: Any) -> CheckOutcome:
        return CheckOutcome(False, "planted failure", {"offending": 1}, ["x"])

    planted = tuple(
        dataclasses.replace(c, rule=failing) if c.name == name else c for c in catalog.CHECKS
    )
    assert any(c.name == name for c in catalog.CHECKS)
    monkeypatch.setattr(catalog, "CHECKS", planted)
    publish(settings, SC.events)
    result = run_follow(instance, platform)
    assert not result.success
    tables = platform.tables()
    assert tables.open(written) is not None
    assert tables.open(not_written) is None
    logged = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [e.get_dagster_event().asset_check_evaluation_data for e in logged]
    failed = [(e.check_name, e.asset_key) for e in evaluations if not e.passed]
    assert failed == [(name, dg.AssetKey(written))]
    # The evaluations that passed before the failing one are logged too (the UI shows them).
    passed = {e.check_name for e in evaluations if e.passed}
    if stage == "silver":
        assert {c.name for c in catalog.blocking_on(schemas.RAW_EVENTS)} <= passed
    # The alert sensor reads the same check execution records as for the asset job's checks.
    key = dg.AssetCheckKey(dg.AssetKey(written), name)
    view = latest_check_evaluations(instance, [key])[key]
    assert (view.outcome, view.run_id) == ("failed", result.run_id)


def test_follow_evaluates_exactly_the_asset_jobs_blocking_checks() -> None:
    """Same names as the projection job's blocking checks, so the UI and alerts see them."""
    defs = all_defs()
    graph = defs.resolve_job_def(PROJECTION_JOB).asset_layer.asset_graph
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == BLOCKING
    known = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert blocking <= known


def test_follow_job_claims_the_writer_pool_and_tag() -> None:
    from cqrs_dagster.defs.names import DELTA_WRITER_POOL, WRITER_TAG

    job = all_defs().resolve_job_def(FOLLOW_JOB)
    assert job.tags[WRITER_TAG] == "projection"
    assert job.executor_def.name == "in_process"
    assert "follow_projection" in job.graph.node_dict
    assert follow.follow_projection.pool == DELTA_WRITER_POOL


def test_follow_run_yields_the_writer_pool_to_a_waiting_maintenance_run(
    settings: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    """With a maintenance run in flight, the run ends after its first pass instead of following
    until idle (60 s here) or the cap."""
    from cqrs_dagster.defs.names import WRITER_TAG

    publish(settings, SC.events)
    instance.add_run(
        dg.DagsterRun(
            job_name="maintain_read_models",
            run_id="maintenance-run",
            status=dg.DagsterRunStatus.STARTED,
            tags={WRITER_TAG: "maintenance"},
        )
    )
    job = all_defs().resolve_job_def(FOLLOW_JOB)
    config = {"ops": {"follow_projection": {"config": {"max_seconds": 60, "idle_seconds": 60}}}}
    result = job.execute_in_process(
        run_config=config, instance=instance, resources={"platform": platform}
    )
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("yielding the Delta writer pool to run maintenance-run" in m for m in messages)
    assert materialized(result, schemas.DAILY_ORDER_METRICS)


def test_runs_of_other_writers_only_count_while_in_flight(instance: dg.DagsterInstance) -> None:
    from cqrs_dagster.defs.names import WRITER_TAG

    for run_id, status, writer in [
        ("done", dg.DagsterRunStatus.SUCCESS, "maintenance"),
        ("other-projection", dg.DagsterRunStatus.STARTED, "projection"),
        ("no-writer", dg.DagsterRunStatus.STARTED, None),
    ]:
        tags = {WRITER_TAG: writer} if writer else {}
        instance.add_run(dg.DagsterRun(job_name="j", run_id=run_id, status=status, tags=tags))
    assert follow.waiting_writer(instance, "own") is None
    instance.add_run(
        dg.DagsterRun(
            job_name="rebuild_read_models",
            run_id="rebuild",
            status=dg.DagsterRunStatus.STARTED,
            tags={WRITER_TAG: "rebuild"},
        )
    )
    waiting = follow.waiting_writer(instance, "own")
    assert waiting is not None and waiting.run_id == "rebuild"
    assert follow.waiting_writer(instance, "rebuild") is None


@pytest.mark.parametrize("pace", [0.0, 60.0])
def test_min_pass_seconds_paces_passes_that_applied_events(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    pace: float,
) -> None:
    """After a pass that applied events the run waits out the rest of the pass period (none by
    pace 0); idle passes keep polling every POLL_SECONDS."""
    slept: list[float] = []
    monkeypatch.setattr(follow, "sleep", slept.append)
    monkeypatch.setenv("CQRS_PROJECTION_FOLLOW_MIN_PASS_SECONDS", str(pace))
    publish(settings, SC.events)
    assert run_follow(instance, platform, idle=0.2).success
    paced = [s for s in slept if s != follow.POLL_SECONDS]
    if pace:
        assert len(paced) == 1 and 0 < paced[0] <= pace
    else:
        assert all(s == 0 for s in paced)


def lag_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, bool]]:
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        data = entry.get_dagster_event().asset_check_evaluation_data
        if data.check_name in LAG_CHECKS:
            out.append((data.check_name, data.passed))
    return out


@pytest.mark.parametrize("every", [0.0, 600.0])
def test_a_following_run_evaluates_the_lag_checks_and_stamps_the_run(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    every: float,
) -> None:
    """Between passes, at most once per FRESHNESS_EVERY_SECONDS (the first pass always), the run
    evaluates the freshness job's lag checks under their names and stamps the time on itself:
    what lets the every-minute schedule skip its own run (a process launch)."""
    monkeypatch.setattr(follow, "FRESHNESS_EVERY_SECONDS", every)
    monkeypatch.setattr(follow, "sleep", lambda _: None)
    publish(settings, SC.events)
    before = time.time()
    result = run_follow(instance, platform, idle=0.3)
    assert result.success
    evaluated = lag_evaluations(instance, result.run_id)
    rounds = len(evaluated) // len(LAG_CHECKS)
    assert len(evaluated) == rounds * len(LAG_CHECKS)
    assert {name for name, _ in evaluated} == LAG_CHECKS and all(ok for _, ok in evaluated)
    passes = len(materialized(result, schemas.RAW_EVENTS))
    assert rounds == 1 if every else rounds > 1  # idle passes count too, not only the applying ones
    assert passes >= 1
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert before <= float(run.tags[follow.FRESHNESS_TAG]) <= time.time()


def test_lag_checks_that_cannot_be_evaluated_do_not_stop_the_run(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_: Settings) -> dg.AssetCheckResult:
        raise OSError("write store unreachable")

    monkeypatch.setattr(lag_checks, "relay_lag_result", broken)
    publish(settings, SC.events)
    result = run_follow(instance, platform, idle=0.2)
    assert result.success
    assert materialized(result, schemas.ORDER_SUMMARY)
    assert lag_evaluations(instance, result.run_id) == []  # none logged: no stamp either
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and follow.FRESHNESS_TAG not in run.tags
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(
        "lag checks not evaluated in this run: write store unreachable" in m for m in messages
    )


def test_a_fresh_stamp_of_an_in_flight_following_run_is_what_counts(
    instance: dg.DagsterInstance,
) -> None:
    now = 1_800_000_000.0
    tag = follow.FRESHNESS_TAG
    old = now - follow.FRESHNESS_STAMP_MAX_AGE_SECONDS - 1
    for run_id, job, status, stamp in [
        ("finished", FOLLOW_JOB, dg.DagsterRunStatus.SUCCESS, now),
        ("stale", FOLLOW_JOB, dg.DagsterRunStatus.STARTED, old),
        ("other-job", PROJECTION_JOB, dg.DagsterRunStatus.STARTED, now),
        ("garbled", FOLLOW_JOB, dg.DagsterRunStatus.STARTED, None),
    ]:
        tags = {tag: "x" if stamp is None else str(stamp)}
        instance.add_run(dg.DagsterRun(job_name=job, run_id=run_id, status=status, tags=tags))
    assert follow.checking_follow_run(instance, now) is None
    instance.add_run(
        dg.DagsterRun(
            job_name=FOLLOW_JOB,
            run_id="following",
            status=dg.DagsterRunStatus.STARTED,
            tags={tag: str(now - 5)},
        )
    )
    found = follow.checking_follow_run(instance, now)
    assert found is not None and found.run_id == "following"
    assert (
        follow.checking_follow_run(instance, now + follow.FRESHNESS_STAMP_MAX_AGE_SECONDS) is None
    )


def test_the_freshness_sensor_evaluates_the_lag_checks_without_a_run(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tick evaluates every lag check itself, under the checks' names and rules, and hands
    the evaluations to Dagster with the tick: no run is launched. It skips while an in-flight
    following run has stamped its own evaluations recently."""
    from cqrs_dagster.defs.freshness_sensor import read_model_freshness_sensor as sensor

    publish(settings, SC.events)  # on the bus, applied by no read model yet
    monkeypatch.setenv("CQRS_LAG_WARN_SECONDS", "0.01")  # an unapplied event fails with WARN
    time.sleep(0.05)  # older than that

    def tick() -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(
            instance=instance, resources={"platform": platform}
        ) as context:
            got = sensor(context)
        assert isinstance(got, dg.SensorResult | dg.SkipReason)
        return got

    result = tick()
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    evaluated = {e.check_name: e for e in result.asset_events}
    assert set(evaluated) == LAG_CHECKS and len(result.asset_events) == len(LAG_CHECKS)
    for table in schemas.READ_MODELS:
        behind = evaluated[f"{table}_freshness_lag"]
        assert behind.asset_key == dg.AssetKey(table)
        assert not behind.passed and behind.severity == dg.AssetCheckSeverity.WARN
        assert behind.metadata["events_behind"].value == len(SC.events)
    relay = evaluated["outbox_relay_lag"]  # the events went to the bus directly: none pending
    assert relay.passed and relay.asset_key == dg.AssetKey(schemas.RAW_EVENTS)
    assert instance.get_runs() == []

    instance.add_run(
        dg.DagsterRun(
            job_name=FOLLOW_JOB,
            run_id="following",
            status=dg.DagsterRunStatus.STARTED,
            tags={follow.FRESHNESS_TAG: f"{time.time():.3f}"},
        )
    )
    skipped = tick()
    assert isinstance(skipped, dg.SkipReason)
    assert "following run following evaluates the lag checks itself" in (skipped.skip_message or "")


def test_a_following_run_compacts_the_small_files_its_passes_add(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """After every FOLLOW_COMPACT_EVERY_PASSES passes that applied events, the run compacts the
    tables holding FOLLOW_COMPACT_MIN_FILES live files or more: no row and no checkpoint
    changes (the tables equal a clean pass's, and a re-run applies nothing twice)."""
    monkeypatch.setattr(maintenance, "FOLLOW_COMPACT_EVERY_PASSES", 1)
    monkeypatch.setattr(maintenance, "FOLLOW_COMPACT_MIN_FILES", 2)
    result = follow_with_late_events(settings, instance, platform)
    assert result.success
    raw = platform.tables().open(schemas.RAW_EVENTS)
    assert raw is not None
    operations = [h["operation"] for h in raw.history()]
    assert "OPTIMIZE" in operations
    assert operations.count("WRITE") >= 2  # passes appended, then compacted
    days = {f.split("event_date=")[1].split("/")[0] for f in raw.file_uris()}
    assert len(raw.file_uris()) == len(days)  # one file per event_date partition
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("compacted raw_events: ") for m in messages)
    assert normalized(platform.tables()) == clean_pass(tmp_path)
    again = run_follow(instance, platform, idle=0.1)
    assert again.success
    assert normalized(platform.tables()) == clean_pass(tmp_path / "again")


def test_follow_run_stamps_when_it_reaches_its_cap(
    settings: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    """The events sensor hands over to the next following run shortly before this time."""
    before = time.time()
    result = run_follow(instance, platform, idle=0.1)  # max_seconds 120
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    until = float(run.tags[follow.FOLLOW_UNTIL_TAG])
    assert before + 120 <= until <= time.time() + 120


def run_handover(
    instance: dg.DagsterInstance, platform: PlatformResource, previous: str
) -> dg.ExecuteInProcessResult:
    job = all_defs().resolve_job_def(FOLLOW_JOB)
    config = {"ops": {"follow_projection": {"config": {"max_seconds": 120, "idle_seconds": 0.5}}}}
    return job.execute_in_process(
        run_config=config,
        instance=instance,
        resources={"platform": platform},
        tags={follow.HANDOVER_TAG: previous},
    )


def test_a_handover_run_projects_only_once_the_run_it_takes_over_from_has_ended(
    settings: Settings, instance: dg.DagsterInstance, platform: PlatformResource
) -> None:
    """The successor the sensor launches before a run's cap waits, holding no pool, until that
    run ends; then its projection op takes the pool and applies what arrived meanwhile."""
    publish(settings, SC.events)
    previous = dg.DagsterRun(
        job_name=FOLLOW_JOB, run_id="previous", status=dg.DagsterRunStatus.STARTED
    )
    instance.add_run(previous)
    ended: list[float] = []

    def end_previous() -> None:
        time.sleep(1.0)
        ended.append(time.time())
        instance.report_run_canceled(previous)

    ender = threading.Thread(target=end_previous)
    ender.start()
    try:
        result = run_handover(instance, platform, "previous")
    finally:
        ender.join()
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("run previous has ended: taking over after") for m in messages)
    started = [
        e.timestamp
        for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
        if e.step_key == "follow_projection"
    ]
    assert len(started) == 1 and started[0] >= ended[0]
    assert materialized(result, schemas.RAW_EVENTS)[0]["events_applied"] == len(SC.events)


def test_a_handover_run_stops_waiting_for_a_run_stuck_in_flight(
    settings: Settings,
    instance: dg.DagsterInstance,
    platform: PlatformResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follow, "HANDOVER_WAIT_MAX_SECONDS", 0.5)
    instance.add_run(
        dg.DagsterRun(job_name=FOLLOW_JOB, run_id="stuck", status=dg.DagsterRunStatus.STARTED)
    )
    result = run_handover(instance, platform, "stuck")
    assert result.success
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("run stuck is still in flight after" in m for m in messages)
