"""Fixtures for the Dagster layer: a seeded local bus and the platform resource on a tmp data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cqrs_dagster.defs.resources import PlatformResource
from cqrs_dagster.settings import Settings
from cqrs_dagster_tests.defs.seed import seed_commands


@pytest.fixture
def platform(settings: Settings) -> PlatformResource:
    return PlatformResource(data_dir=str(settings.data_dir), env="local")


@pytest.fixture
def seeded(settings: Settings) -> Settings:
    """A data dir whose bus holds the events of a few customers and orders."""
    seed_commands(settings, customers=3, orders_per_customer=2)
    return settings


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def data_dir(settings: Settings) -> Path:
    return settings.data_dir
