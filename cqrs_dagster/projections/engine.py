"""The projection-engine port: an engine computes what a step changes; it never writes.

A projection step is split in two:

- **compute** (this port): decode bus bodies into raw_events rows, fold a silver batch into the
  rows to merge, build gold rows. Inputs and outputs are Arrow tables with the schemas of
  :mod:`.schemas`, so every engine is interchangeable and its output can be compared exactly
  (``order_summary_whole`` alone reads Delta snapshots and returns a stream of batches, so a
  first build or full rebuild of a large summary never holds the whole table).
- **commit** (:mod:`.commit`, engine-independent): Delta writes that carry the table's
  checkpoint in the same commit, and dead letters.

Engines: ``duckdb`` (DuckDB + Arrow in this process, the default) and ``spark`` (PySpark over
Spark Connect). An engine may leave work to the shared Python path: bodies it does not decode
(``fast`` false) go through ``parse_body``; keys it does not fold go through the Python fold. The
engine contract test (``cqrs_dagster_tests/contracts/engine_contract.py``) holds every engine to
the same tables for the same events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

import pyarrow as pa
from deltalake import DeltaTable

from cqrs_dagster.eventbus.canonical import canonical_flags

from .schemas import ORDER_SUMMARY_SOURCE_COLUMNS

#: Message bodies as a bus read hands them over: an Arrow binary array (a bulk read), or bytes.
Bodies: TypeAlias = "pa.Array | Sequence[bytes]"
Flags: TypeAlias = "pa.Array | Sequence[bool]"


def _one(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def body_array(bodies: Bodies) -> pa.Array:
    """``bodies`` as one large_binary array (a copy only where they are not Arrow already)."""
    if isinstance(bodies, pa.Array | pa.ChunkedArray):
        return _one(bodies).cast(pa.large_binary())
    return pa.array(list(bodies), pa.large_binary())


def flag_array(canonical: Flags | None, bodies: pa.Array) -> pa.Array:
    """Each body's canonical flag as a bool array: ``canonical`` as the bus recorded it, else
    computed here (:func:`cqrs_dagster.eventbus.canonical.canonical_flags`)."""
    if canonical is None:
        flags = pa.array(canonical_flags(bodies.to_pylist()), pa.bool_())
    elif isinstance(canonical, pa.Array | pa.ChunkedArray):
        flags = _one(canonical).cast(pa.bool_())
    else:
        flags = pa.array(list(canonical), pa.bool_())
    if len(flags) != len(bodies):
        raise ValueError(f"{len(flags)} canonical flags for {len(bodies)} bodies")
    if flags.null_count:
        raise ValueError("a canonical flag is null: pass None to have the engine check the bodies")
    return flags


class FoldOutput(NamedTuple):
    """Rows of the keys the engine folded, how many events they applied, and the other keys."""

    rows: pa.Table
    applied: int
    others: pa.Array


class ProjectionEngine(ABC):
    """Computes the changes of the projection steps over Arrow batches."""

    name: str = "abstract"
    #: its methods may run on several threads at once (a catch-up then ingests the next raw
    #: batch while silver folds the last one: :func:`..pipeline.catch_up`)
    concurrent: bool = False

    @abstractmethod
    def decode(self, bodies: Bodies, canonical: Flags | None = None) -> pa.Table:
        """One row per body (Arrow binary, or bytes), in order: ``i`` (its index), ``fast`` (decoded here) and, where
        fast, the raw_events envelope columns (``event_id`` .. ``schema_version``,
        ``event_date``). Only current-schema envelopes in the canonical shape, with no repeated
        key in any object, may be fast: every other body is decoded by the shared Python path.
        ``canonical``: each body's :func:`cqrs_dagster.eventbus.canonical.canonical` as the bus
        recorded it (None: the engine computes it)."""

    @abstractmethod
    def fold(self, table: str, events: pa.Table, current: pa.Table) -> FoldOutput:
        """Fold raw_events rows of ``table``'s event types onto ``current`` rows: the final rows
        of every *clean* key (see :mod:`.engines.duckdb.folds`), the rest left to the Python
        fold."""

    @abstractmethod
    def order_summary(self, orders: pa.Table, customers: pa.Table) -> pa.Table:
        """order_summary rows: ``orders`` joined to their customer's name (null until known),
        sorted by order_id."""

    def order_summary_whole(
        self, orders: DeltaTable, customers: DeltaTable
    ) -> pa.RecordBatchReader:
        """order_summary rows of every order of the ``orders`` snapshot, as
        :meth:`order_summary` gives them (same rows, same order), streamed in batches: a first
        build or a full rebuild writes them as they come instead of holding every order, the
        join and its sorted copy at once. By default both tables are read whole and
        :meth:`order_summary` computes the rows; an engine that can read Delta files itself
        streams them."""
        rows = self.order_summary(
            orders.to_pyarrow_table(columns=ORDER_SUMMARY_SOURCE_COLUMNS),
            customers.to_pyarrow_table(columns=["customer_id", "name"]),
        )
        return rows.to_reader()

    @abstractmethod
    def daily_metrics(self, orders: pa.Table) -> pa.Table:
        """daily_order_metrics rows for the days of ``orders``: order count, revenue, average
        order value (half-up cents), unique customers; sorted by day."""

    def close(self) -> None:  # noqa: B027 (an engine with nothing to release keeps the default)
        """Release the engine's connections."""


class EngineUnavailable(RuntimeError):
    """The engine cannot run (its server is down, a package is missing): the message says which
    setting or server to check."""
