"""Fixtures of the end-to-end tests: the Azure environment over the local stand-in servers."""

from cqrs_dagster_tests.e2e.azure_env import azure_settings, eventhubs_2p

__all__ = ["azure_settings", "eventhubs_2p"]
