"""uuid7: RFC 9562 layout, time order, uniqueness, and distinct random bits in a forked child."""

from __future__ import annotations

import os
import uuid

from cqrs_dagster.domain.ids import uuid7


def test_layout_version_variant_and_timestamp() -> None:
    text = uuid7(now_ms=1_764_000_000_123)
    value = uuid.UUID(text)
    assert str(value) == text  # the canonical lower-case 8-4-4-4-12 form
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert value.int >> 80 == 1_764_000_000_123


def test_ids_are_unique_and_sort_by_time() -> None:
    ids = [uuid7(now_ms=ms) for ms in range(1_000, 3_000) for _ in range(10)]
    assert len(set(ids)) == len(ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_a_forked_child_does_not_repeat_the_parents_random_bits() -> None:
    uuid7()  # fill this thread's buffer before forking
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, uuid7(now_ms=5).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child != uuid7(now_ms=5)
