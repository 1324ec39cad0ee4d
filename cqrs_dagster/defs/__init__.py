"""Orchestration: assets, checks, sensors, schedules, alerts. The ONLY package that imports dagster.

Loaded with ``dg.load_from_defs_folder`` from :mod:`cqrs_dagster.definitions`.
"""
