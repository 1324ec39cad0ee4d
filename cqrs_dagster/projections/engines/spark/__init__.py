"""The Spark projection engine: decode, silver folds and gold in Spark SQL over Spark Connect.

Only the Spark Connect DataFrame/SQL subset is used (``createDataFrame`` of an Arrow table, temp
views, ``sql``, ``toArrow``; no RDD, no ``sparkContext``, no ``DeltaTable``), so the module runs
unchanged on Sail (tested), Apache Spark Connect and Databricks Connect. Spark only computes:
the rows come back as Arrow and the shared committer (:mod:`cqrs_dagster.projections.commit`)
writes them with the checkpoint in one delta-rs commit, so exactly-once does not depend on the
Spark server. pyspark is imported lazily: the package imports without it.
"""

from __future__ import annotations

from .engine import SparkEngine, active_session, connect, probe, unavailable

__all__ = ["SparkEngine", "active_session", "connect", "probe", "unavailable"]
