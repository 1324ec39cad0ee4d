"""Schemathesis hooks for the CLI run against ``cqrs api`` (``SCHEMATHESIS_HOOKS=<this module>``).

A schema-valid consistency token may name a write that never happened; with ``wait_ms`` up to
30 s each such request would wait it out. The hook caps ``wait_ms`` at 50 ms before every call
(every phase): the wait and its 412 answer are still exercised, in a run that stays short.
"""

from __future__ import annotations

import contextlib
from typing import Any

import schemathesis

MAX_WAIT_MS = 50


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    query = case.query
    if isinstance(query, dict) and "wait_ms" in query:
        with contextlib.suppress(TypeError, ValueError):  # not a number: left for the API
            query["wait_ms"] = min(int(query["wait_ms"]), MAX_WAIT_MS)
