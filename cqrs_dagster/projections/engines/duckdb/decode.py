"""Decode a batch of bus message bodies into raw_events columns, vectorized (DuckDB's JSON reader).

Per-event Python (``orjson.loads`` + ``EventEnvelope.from_dict`` + a row dict) costs ~15 µs; a
catch-up of a million events cannot afford it. DuckDB parses the bodies once and checks, per
body, that it is a current-schema envelope in the canonical shape every producer of this
platform writes (string ids, integer version >= 1, schemaVersion 1, ``...Z`` UTC timestamp,
string correlation / causation ids, object data and metadata) and canonical
(:func:`cqrs_dagster.eventbus.canonical.canonical`: the exact bytes orjson writes; no repeated
key, whose meaning JSON leaves open: DuckDB keeps the first value, orjson the last, so such a
body takes the Python path and the last value wins on every engine). Those rows are built
column-wise. The canonical flags come from the bus when it recorded them on append (the local
bus), else they are computed here.
Any other body (old schema versions to upcast, missing or odd fields, invalid JSON or UTF-8) is
flagged and decoded by the Python path (``parse_body``), which upcasts it or names the error for
the dead letter. Which path decodes a body depends on the body alone, so a row never depends on
how the bus was batched.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from cqrs_dagster.domain.events import CURRENT_SCHEMA_VERSION, ENVELOPE_FIELDS, EVENT_TYPES

from ...engine import Bodies, Flags, body_array, flag_array
from .connection import duck

_SPEC = "{" + ", ".join(f'"{f}": "JSON"' for f in ENVELOPE_FIELDS) + "}"
_TYPES = ", ".join(f"'{t}'" for t in sorted(EVENT_TYPES))
# A UTC timestamp as every producer here writes it; TRY_CAST then rejects the impossible dates
# the pattern lets through (Feb 30), so such a body takes the Python path and is dead-lettered.
_TS = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?Z$"
)


def _text(field: str) -> str:
    """A JSON string field's value (NULL unless it is a string); unescaped only when needed."""
    x = f"j.{field}"
    return (
        f"(CASE WHEN starts_with({x}, '\"') THEN CASE WHEN contains({x}, '\\') "
        f"THEN {x} ->> '$' ELSE {x}[2:-2] END END)"
    )


_SQL = f"""
WITH p AS (
    SELECT i, canonical, CASE WHEN canonical THEN body END AS doc FROM msgs
), q AS (
    SELECT i, try(json_transform(doc, '{_SPEC}')) AS j, canonical AS plain_doc FROM p
), v AS (
    SELECT i, j, plain_doc,
        {_text("eventId")} AS event_id,
        {_text("eventType")} AS event_type,
        {_text("aggregateId")} AS aggregate_id,
        {_text("aggregateType")} AS aggregate_type,
        CASE WHEN regexp_full_match(j.version, '[1-9][0-9]{{0,17}}')
            THEN CAST(j.version AS BIGINT) END AS version,
        CASE WHEN regexp_full_match(j.schemaVersion, '[1-9][0-9]{{0,8}}')
            THEN CAST(j.schemaVersion AS BIGINT) END AS schema_version,
        {_text("timestamp")} AS ts,
        TRY_CAST({_text("timestamp")} AS TIMESTAMPTZ) AS ts_value,
        {_text("correlationId")} AS correlation_id,
        {_text("causationId")} AS causation_id
    FROM q
), f AS (
    SELECT *, coalesce(
        event_id <> '' AND event_type IN ({_TYPES}) AND aggregate_id <> ''
        AND aggregate_type <> '' AND version >= 1
        AND schema_version = {CURRENT_SCHEMA_VERSION}
        AND regexp_full_match(ts, '{_TS}') AND NOT starts_with(ts, '0000')
        AND ts_value IS NOT NULL
        AND correlation_id IS NOT NULL AND causation_id IS NOT NULL
        AND starts_with(j.data, '{{') AND starts_with(j.metadata, '{{')
        AND plain_doc, false) AS fast
    FROM v
)
SELECT i, fast, event_id, event_type, aggregate_id, aggregate_type, version,
    CASE WHEN fast THEN ts_value END AS event_timestamp,
    correlation_id, causation_id,
    CAST(j.data AS VARCHAR) AS data, CAST(j.metadata AS VARCHAR) AS metadata,
    CAST(schema_version AS INTEGER) AS schema_version,
    CASE WHEN fast THEN CAST(ts_value AS DATE) END AS event_date
FROM f
"""


def decode_bodies(bodies: Bodies, canonical: Flags | None = None) -> pa.Table:
    """One row per body, in order: ``i`` (its index), ``fast`` (decoded here) and, where fast,
    the envelope's raw_events columns (``event_id`` ... ``schema_version``, ``event_date``).
    ``canonical``: each body's flag as the bus recorded it (None: computed here)."""
    body = body_array(bodies)
    flags = flag_array(canonical, body)
    # A canonical body is orjson's output, so valid UTF-8: DuckDB gets it as text (the same
    # buffers, viewed as large_string) and parses it once (json_transform); any other body is
    # left out (empty), the Python path decodes it.
    texts = pc.if_else(flags, body, pa.scalar(b"", pa.large_binary())).view(pa.large_string())
    msgs = pa.table(
        {"i": pa.array(range(len(body)), pa.int64()), "body": texts, "canonical": flags}
    )
    con = duck()
    try:
        con.register("msgs", msgs)
        out = con.sql(_SQL).to_arrow_table()
    finally:
        con.close()
    index = out.column("i")
    if out.num_rows < 2 or pc.all(pc.less(index[:-1], index[1:])).as_py():
        return out  # DuckDB kept the input order (it usually does): no copy
    return out.sort_by("i")
