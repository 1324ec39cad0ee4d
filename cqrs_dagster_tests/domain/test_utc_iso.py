"""utc_iso: the envelope's timestamp text, whatever the caches remembered before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from cqrs_dagster.domain.events import parse_utc, utc_iso


def reference(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_within_and_across_seconds_minutes_days_and_years() -> None:
    start = datetime(2026, 12, 31, 23, 59, 58, 999_000, tzinfo=UTC)
    for step in range(0, 3_000_000, 2_500):  # ~3 s around the new year, in 2.5 ms steps
        ts = start + timedelta(microseconds=step)
        assert utc_iso(ts) == reference(ts)
    assert utc_iso(datetime(2027, 1, 1, tzinfo=UTC)) == "2027-01-01T00:00:00.000000Z"


def test_same_second_other_fields_are_not_taken_from_the_cache() -> None:
    """One second's prefix must not answer for the same second of another minute, day, year."""
    a = datetime(2026, 12, 7, 6, 0, 5, 1, tzinfo=UTC)
    assert utc_iso(a) == "2026-12-07T06:00:05.000001Z"
    for other in (
        a.replace(minute=1),
        a.replace(hour=7),
        a.replace(day=8),
        a.replace(month=11),
        a.replace(year=2027),
    ):
        assert utc_iso(other) == reference(other)
        assert utc_iso(a) == "2026-12-07T06:00:05.000001Z"


def test_other_zones_are_rendered_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    ts = datetime(2026, 12, 7, 7, 0, 5, 250_000, tzinfo=cet)
    assert utc_iso(ts) == "2026-12-07T06:00:05.250000Z"
    # The same second in UTC, just rendered, must not leak into the zoned value or back.
    utc = datetime(2026, 12, 7, 7, 0, 5, 250_000, tzinfo=UTC)
    assert utc_iso(utc) == "2026-12-07T07:00:05.250000Z"
    assert utc_iso(ts) == "2026-12-07T06:00:05.250000Z"


def test_years_before_1000_keep_strftimes_form() -> None:
    ts = datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert utc_iso(ts) == reference(ts)


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_matches_strftime_and_parses_back(ts: datetime) -> None:
    text = utc_iso(ts)
    assert text == reference(ts)
    assert parse_utc(text) == ts
