"""Identifiers: time-ordered UUIDv7 for server-generated ids (RFC 9562).

``uuid7`` runs once per command and per event on the write path, so the random bits come from a
per-thread pool of ``os.urandom`` values (one syscall per 400 ids instead of one per id). The
buffers are dropped in a forked child, so parent and child never hand out the same bits.
"""

from __future__ import annotations

import os
import threading
import time

_RANDOM_BYTES = 10  # 74 random bits are used per id (12 rand_a + 62 rand_b)
_BUFFER_IDS = 400
_local = threading.local()


def _reset_after_fork() -> None:
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)


def _refill() -> list[int]:
    buf = os.urandom(_RANDOM_BYTES * _BUFFER_IDS)
    pool = [
        int.from_bytes(buf[i : i + _RANDOM_BYTES], "big") for i in range(0, len(buf), _RANDOM_BYTES)
    ]
    _local.pool = pool
    return pool


def _random_bits() -> int:
    try:
        return _local.pool.pop()  # type: ignore[no-any-return]
    except (AttributeError, IndexError):
        return _refill().pop()


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48-bit Unix-ms timestamp, then random bits, so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = _random_bits()
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b (62 bits)
    # The canonical 8-4-4-4-12 form, without building a uuid.UUID.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
