"""Pure alert transitions: one alert per change of level (recoveries included), none when a level
is unchanged or a source's first observation is OK; checked on random level sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cqrs_dagster.alerts.model import Alert, Level, Observation, transitions

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
levels = st.sampled_from(list(Level))


def obs(source: str, level: Level | str, i: int = 0) -> Observation:
    return Observation(
        source=source,
        level=Level(level),
        subject=f"subject {source}",
        text=f"text {i}",
        observed_at=T0 + timedelta(seconds=i),
        metadata={"i": i},
    )


def expected_changes(sequence: list[Level]) -> list[tuple[Level | None, Level]]:
    changes: list[tuple[Level | None, Level]] = []
    before: Level | None = None
    for level in sequence:
        if level != before and not (before is None and level is Level.OK):
            changes.append((before, level))
        before = level
    return changes


@given(st.lists(levels, max_size=30))
def test_one_alert_per_change_tick_by_tick(sequence: list[Level]) -> None:
    states: dict[str, Level] = {}
    sent: list[Alert] = []
    for i, level in enumerate(sequence):
        alerts, states = transitions(states, [obs("check:a/c", level, i)])
        assert len(alerts) <= 1
        sent += alerts
    assert [(a.previous_level, a.level) for a in sent] == expected_changes(sequence)
    assert all(a.is_recovery == (a.level is Level.OK) for a in sent)
    if sequence:
        assert states == {"check:a/c": sequence[-1]}


@given(st.dictionaries(st.sampled_from(["s1", "s2", "s3"]), st.lists(levels, max_size=12)))
def test_sources_are_independent_and_batching_changes_nothing(
    sequences: dict[str, list[Level]],
) -> None:
    batch = [obs(src, level, i) for src, seq in sequences.items() for i, level in enumerate(seq)]
    alerts, states = transitions({}, batch)
    for src, seq in sequences.items():
        mine = [(a.previous_level, a.level) for a in alerts if a.source == src]
        assert mine == expected_changes(seq)
        if seq:
            assert states[src] == seq[-1]


@given(levels, st.lists(levels, min_size=1, max_size=5))
def test_unchanged_level_sends_nothing(start: Level, repeats: list[Level]) -> None:
    alerts, states = transitions({"s": start}, [obs("s", start, i) for i in range(len(repeats))])
    assert alerts == []
    assert states == {"s": start}


def test_recovery_and_direction_titles() -> None:
    alerts, _ = transitions(
        {},
        [obs("s", level, i) for i, level in enumerate(["WARN", "ERROR", "WARN", "OK"])],
    )
    assert [a.title for a in alerts] == [
        "WARN: subject s",
        "ERROR: subject s",
        "WARN: subject s improved from ERROR to WARN",
        "RECOVERED: subject s is healthy again (was WARN)",
    ]
    assert alerts[-1].is_recovery and alerts[-1].occurred_at == T0 + timedelta(seconds=3)
    assert alerts[0].previous_level is None and alerts[0].metadata == {"i": 0}


def test_unobserved_source_keeps_its_level() -> None:
    alerts, states = transitions({"gone": Level.ERROR}, [obs("other", Level.OK)])
    assert alerts == []
    assert states == {"gone": Level.ERROR, "other": Level.OK}


@given(levels, st.one_of(st.none(), levels))
def test_alert_round_trips_through_its_json_form(level: Level, previous: Level | None) -> None:
    alert = Alert("check:a/b", level, previous, "t", "x", T0, {"lag_seconds": 1.5, "n": None})
    assert Alert.from_dict(alert.to_dict()) == alert
