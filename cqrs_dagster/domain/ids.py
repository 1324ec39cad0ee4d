"""Identifiers: time-ordered UUIDv7 for server-generated ids (RFC 9562)."""

from __future__ import annotations

import os
import time


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit Unix-ms timestamp, then random bits, so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b (62 bits)
    # The canonical 8-4-4-4-12 form, without building a uuid.UUID (this runs per command/event).
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
