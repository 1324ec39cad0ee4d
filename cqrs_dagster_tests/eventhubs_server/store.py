"""In-memory event hubs: partitions, sequence numbers, offsets, enqueued times, start filters.

Pure bookkeeping (no AMQP): the connection layer hands in encoded messages and asks where a
receiver starts. Any hub name is created on first use with the store's default partition count.

With a journal file the store is durable like Event Hubs: every stored event is appended to it
(hub, partition, sequence number, offset, enqueued time, delivered payload) and :meth:`Store.sync`
fsyncs it before the sender's transfer is accepted; a store opened on the same file (a server
restarted after a kill) starts with every event that was accepted, at the same positions.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from azure.eventhub._buffered_producer._partition_resolver import (  # type: ignore[import-untyped]
    generate_hash_code,
)

_FILTER = re.compile(
    r"amqp\.annotation\.x-opt-(sequence-number|offset|enqueued-time)\s*(>=|>)\s*'([^']*)'"
)


class NotFound(LookupError):
    """An address or partition that does not exist."""


@dataclass(frozen=True)
class StoredEvent:
    sequence_number: int
    offset: int
    enqueued_ms: int
    payload: bytes  # the AMQP message as delivered to receivers (x-opt-* annotations included)


@dataclass
class Partition:
    hub: str
    partition_id: int
    events: list[StoredEvent] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    next_offset: int = 0
    listeners: dict[object, Callable[[], None]] = field(default_factory=dict)  # receiver -> wake

    def append(self, build: Callable[[int, int, int], bytes], body_size: int) -> StoredEvent:
        """Append one event; ``build(seq, offset, enqueued_ms)`` returns its delivered payload."""
        seq = len(self.events)
        now = max(time.time_ns() // 1_000_000, self.times[-1] if self.times else 0)
        offset = self.next_offset
        event = StoredEvent(seq, offset, now, build(seq, offset, now))
        self.events.append(event)
        self.offsets.append(offset)
        self.times.append(now)
        self.next_offset += max(body_size, 1)
        return event

    def restore(self, event: StoredEvent, next_offset: int) -> None:
        """Put back an event read from the journal (the next one to arrive follows it)."""
        if event.sequence_number != len(self.events):
            raise ValueError(f"journal gap in {self.hub}/{self.partition_id}: {event}")
        self.events.append(event)
        self.offsets.append(event.offset)
        self.times.append(event.enqueued_ms)
        self.next_offset = next_offset

    def notify(self) -> None:
        for listener in list(self.listeners.values()):
            listener()

    def start_index(self, selector: str | None) -> int:
        """Index of the first event a receiver with this selector filter gets."""
        if not selector:
            return 0
        match = _FILTER.search(selector)
        if match is None:
            raise ValueError(f"unsupported selector filter: {selector!r}")
        kind, op, raw = match.groups()
        inclusive = op == ">="
        if kind == "offset":
            if raw == "@latest":
                return len(self.events)
            if raw == "-1":
                return 0
            return self._bisect(self.offsets, int(raw), inclusive)
        if kind == "sequence-number":
            return min(max(int(raw) + (0 if inclusive else 1), 0), len(self.events))
        return self._bisect(self.times, int(raw), inclusive)

    @staticmethod
    def _bisect(values: list[int], bound: int, inclusive: bool) -> int:
        return (bisect.bisect_left if inclusive else bisect.bisect_right)(values, bound)

    def properties(self) -> dict[str, object]:
        last = self.events[-1] if self.events else None
        return {
            "name": self.hub,
            "partition": str(self.partition_id),
            "begin_sequence_number": 0,
            "last_enqueued_sequence_number": last.sequence_number if last else -1,
            "last_enqueued_offset": str(last.offset if last else -1),
            "last_enqueued_time_utc": last.enqueued_ms if last else 0,
            "is_partition_empty": last is None,
        }


@dataclass
class Hub:
    name: str
    partitions: list[Partition]
    created_ms: int
    _round_robin: itertools.cycle[int] = field(init=False)

    def __post_init__(self) -> None:
        self._round_robin = itertools.cycle(range(len(self.partitions)))

    def partition(self, partition_id: str | int) -> Partition:
        try:
            index = int(partition_id)
        except ValueError:
            raise NotFound(
                f"partition {partition_id!r} of hub {self.name!r} does not exist"
            ) from None
        if not 0 <= index < len(self.partitions):
            raise NotFound(f"partition {partition_id!r} of hub {self.name!r} does not exist")
        return self.partitions[index]

    def route(self, partition_key: bytes | None) -> Partition:
        """The partition a message sent to the hub lands in: hashed key, else round robin.

        Keys hash with Event Hubs' own function (Jenkins lookup3, as the SDK's buffered producer
        computes it), so a key maps to the same partition here as on the service.
        """
        if partition_key is None:
            return self.partitions[next(self._round_robin)]
        return self.partitions[
            abs(generate_hash_code(partition_key.decode()) % len(self.partitions))
        ]

    def properties(self) -> dict[str, object]:
        return {
            "name": self.name,
            "created_at": self.created_ms,
            "partition_count": len(self.partitions),
            "partition_ids": [str(p.partition_id) for p in self.partitions],
        }


class Store:
    """Every hub of the namespace, created on first use."""

    def __init__(self, partition_count: int, journal: Path | None = None) -> None:
        if partition_count < 1:
            raise ValueError("partition_count must be >= 1")
        self.partition_count = partition_count
        self.hubs: dict[str, Hub] = {}
        self._journal: IO[bytes] | None = None
        if journal is not None:
            if journal.exists():
                self._replay(journal)
            self._journal = journal.open("ab")

    def append(
        self, partition: Partition, build: Callable[[int, int, int], bytes], body_size: int
    ) -> StoredEvent:
        """Append one event to ``partition`` (and to the journal; call :meth:`sync` after)."""
        event = partition.append(build, body_size)
        if self._journal is not None:
            record = {
                "hub": partition.hub,
                "partition": partition.partition_id,
                "seq": event.sequence_number,
                "offset": event.offset,
                "ms": event.enqueued_ms,
                "next_offset": partition.next_offset,
                "payload": base64.b64encode(event.payload).decode(),
            }
            self._journal.write(json.dumps(record).encode() + b"\n")
        return event

    def sync(self) -> None:
        """Make every appended event durable (before the transfer that carried it is accepted)."""
        if self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())

    def _replay(self, journal: Path) -> None:
        data = journal.read_bytes()
        valid = 0  # bytes of whole records: a record cut short by a kill is cut off the file
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("unterminated")
                record = json.loads(line)
            except ValueError:
                break  # its transfer was never accepted
            valid += len(line)
            event = StoredEvent(
                record["seq"], record["offset"], record["ms"], base64.b64decode(record["payload"])
            )
            self.hub(record["hub"]).partition(record["partition"]).restore(
                event, record["next_offset"]
            )
        if valid < len(data):
            with journal.open("r+b") as f:
                f.truncate(valid)

    def hub(self, name: str) -> Hub:
        if not name or name.startswith("$"):
            raise NotFound(f"no event hub named {name!r}")
        hub = self.hubs.get(name)
        if hub is None:
            parts = [Partition(name, i) for i in range(self.partition_count)]
            hub = self.hubs[name] = Hub(name, parts, time.time_ns() // 1_000_000)
        return hub

    def resolve(self, address: str) -> tuple[Hub, Partition | None]:
        """``<hub>``, ``<hub>/Partitions/<n>`` or ``<hub>/ConsumerGroups/<cg>/Partitions/<n>``."""
        if "://" in address:  # amqps://host:port/<path>
            address = address.split("://", 1)[1].partition("/")[2]
        parts = address.strip("/").split("/")
        if len(parts) == 1:
            return self.hub(parts[0]), None
        if len(parts) == 3 and parts[1].lower() == "partitions":
            hub = self.hub(parts[0])
            return hub, hub.partition(parts[2])
        if (
            len(parts) == 5
            and parts[1].lower() == "consumergroups"
            and parts[3].lower() == "partitions"
        ):
            hub = self.hub(parts[0])
            return hub, hub.partition(parts[4])
        raise NotFound(f"unknown address {address!r}")
