"""uuid7: RFC 9562 layout, time order, uniqueness, and distinct random bits in a forked child."""

from __future__ import annotations

import os
import threading
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


def test_every_random_digit_varies_and_the_variant_takes_its_four_values() -> None:
    """74 random bits per id: each of rand_a's and rand_b's hex digits takes many values across
    ids of one millisecond, and the variant nibble is 8, 9, a or b (``10`` then 2 random bits)."""
    ids = [uuid.UUID(uuid7(now_ms=7)).hex for _ in range(2_000)]  # > one pool of 400
    random_digits = [*range(13, 16), *range(17, 32)]  # after the version and variant digits
    for position in random_digits:
        assert len({i[position] for i in ids}) == 16, position
    assert {i[16] for i in ids} == set("89ab")
    assert {i[12] for i in ids} == {"7"}


def test_threads_draw_distinct_random_bits() -> None:
    results: list[list[str]] = [[], []]

    def draw(k: int) -> None:
        results[k] = [uuid7(now_ms=9) for _ in range(1_000)]

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results[0]) | set(results[1])) == 2_000
