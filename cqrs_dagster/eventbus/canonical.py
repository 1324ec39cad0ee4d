"""Canonical message bodies: the exact bytes ``orjson`` writes for what it reads.

Every producer of this platform writes its bodies with orjson, so they are canonical. A
projection engine decodes canonical envelopes column-wise (``projections.engines``); any other
body (whitespace, repeated keys, odd numbers or escapes, invalid JSON) takes the shared Python
path, so a row never depends on which decoder made it. The local bus records the flag of each
body when it appends it (:class:`.local.LocalEventBus`), once, so a read of the log does not
parse every body a second time; other buses leave it to the reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

#: The rule below, named: a log that stored flags under another rule has them cleared on open
#: (:class:`.local.LocalEventBus`). Change it whenever :func:`canonical` changes its answers.
RULE = "orjson-roundtrip-1"

# A control-character escape with a hex letter: orjson writes it in lower case, DuckDB in upper.
_LETTER_ESCAPE = re.compile(rb"\\u00[01][a-fA-F]")


def canonical(body: bytes) -> bool:
    """The body is exactly what ``orjson`` writes for what it reads (one cheap round trip): no
    repeated key anywhere (JSON leaves its meaning open: DuckDB keeps the first value, orjson the
    last), no NaN / Infinity, no number or escape that parsers write differently (1e16, integers
    beyond 64 bits, control-character escapes with a hex letter), no whitespace."""
    if b"\\u00" in body and _LETTER_ESCAPE.search(body):
        return False
    try:
        return orjson.dumps(orjson.loads(body)) == body
    except orjson.JSONDecodeError:
        return False


def canonical_flags(bodies: Sequence[bytes]) -> list[bool]:
    """:func:`canonical` of every body, in one comprehension while no body is invalid JSON (a
    function call per body costs as much as the round trip itself)."""
    loads, dumps, odd = orjson.loads, orjson.dumps, _LETTER_ESCAPE.search
    try:
        return [(b"\\u00" not in b or not odd(b)) and dumps(loads(b)) == b for b in bodies]
    except orjson.JSONDecodeError:
        return [canonical(b) for b in bodies]
