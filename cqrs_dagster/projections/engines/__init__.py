"""Projection engines behind :class:`~cqrs_dagster.projections.engine.ProjectionEngine`.

``duckdb`` (default): DuckDB + Arrow in the projection's process. ``spark`` (:mod:`.spark`, the
``spark`` extra, imported only when chosen): Spark SQL over Spark Connect (Sail locally, Databricks
in production). The engine is chosen by the ``CQRS_PROJECTION_ENGINE`` setting and built by the
composition root (:mod:`cqrs_dagster.wiring`).
"""

from __future__ import annotations

from .duckdb import DuckDBEngine

__all__ = ["DuckDBEngine"]
