"""Schemathesis hooks for the CLI run against ``cqrs api`` (``SCHEMATHESIS_HOOKS=<this module>``).

A schema-valid consistency token may name a write that never happened; with ``wait_ms`` up to
30 s each such request would wait it out. The hook caps a schema-valid ``wait_ms`` (0 to
30,000) at 50 ms before every call (every phase): the wait and its 412 answer are still
exercised, in a run that stays short. A value outside that range is left as generated: it is a
negative case, and capping it would turn it into a valid request that the API rightly accepts
(which schemathesis then reports as ST201, "schema-violating request accepted").
"""

from __future__ import annotations

import contextlib
from typing import Any

import schemathesis

from cqrs_dagster.query.consistency import MAX_WAIT_MS as SCHEMA_MAX_WAIT_MS

MAX_WAIT_MS = 50


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    query = case.query
    if isinstance(query, dict) and "wait_ms" in query:
        query["wait_ms"] = capped_wait_ms(query["wait_ms"])


def capped_wait_ms(value: Any) -> Any:
    """``value`` lowered to ``MAX_WAIT_MS`` when it is a schema-valid wait; anything else as is."""
    if isinstance(value, bool):
        return value
    with contextlib.suppress(TypeError, ValueError):  # not a number: left for the API
        number = float(value)  # "3000.0" is an integer by JSON Schema
        if number.is_integer() and MAX_WAIT_MS < number <= SCHEMA_MAX_WAIT_MS:
            return MAX_WAIT_MS
    return value
