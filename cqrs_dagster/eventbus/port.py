"""The EventBus port: a partitioned, per-key ordered, at-least-once log with Event Hubs semantics.

Concept map (local log -> Event Hubs): partition (0..N-1) -> partition id "0".."N-1"; partition
key -> partition key (hashed to a partition by the bus); sequence number (from 0 per partition) ->
sequence number; offset -> offset; enqueued time -> enqueued time; ``partition_info`` ->
``get_partition_properties`` (last enqueued sequence number / time).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from cqrs_dagster.domain.events import EventEnvelope

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OutgoingEvent:
    """A message to publish; messages with one partition key land in one partition, in order."""

    partition_key: str
    body: bytes

    @classmethod
    def of(cls, event: EventEnvelope) -> OutgoingEvent:
        return cls(partition_key=event.aggregate_id, body=event.to_json())


@dataclass(frozen=True)
class ReceivedEvent:
    """A message as read back, with the bus's position."""

    partition: int
    sequence_number: int
    #: Opaque (a string on geo-replicated Event Hubs namespaces): carried and stored, never
    #: compared or used as a cursor. The position is ``sequence_number``.
    offset: str
    enqueued_time: datetime
    partition_key: str | None
    body: bytes


@dataclass(frozen=True)
class ReceivedColumns:
    """Events of one partition read column by column, in order, as Arrow arrays: what a bulk
    reader (raw ingest) needs, without a Python object per event. ``sequence_numbers`` (int64),
    ``offsets`` (string) and ``bodies`` (binary) are those of :class:`ReceivedEvent`;
    ``enqueued_us`` (int64) is the enqueued time in microseconds since the Unix epoch (UTC); the
    partition key is left out (no bulk reader uses it). ``canonical`` (bool): each body's
    :func:`.canonical.canonical`, where the bus recorded it on append (the local bus), else None
    (the reader computes it); a function of the bodies, so not compared."""

    partition: int
    sequence_numbers: pa.Array
    offsets: pa.Array
    enqueued_us: pa.Array
    bodies: pa.Array
    canonical: pa.Array | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.sequence_numbers)

    @property
    def last_sequence_number(self) -> int:
        """The sequence number of the last event (IndexError when there is none)."""
        if not len(self):
            raise IndexError(f"no events were read from partition {self.partition}")
        return int(self.sequence_numbers[-1].as_py())

    @classmethod
    def of(cls, partition: int, events: Sequence[ReceivedEvent]) -> ReceivedColumns:
        """The columns of ``events`` (all of ``partition``)."""
        return cls(
            partition=partition,
            sequence_numbers=pa.array([e.sequence_number for e in events], pa.int64()),
            offsets=pa.array([e.offset for e in events], pa.string()),
            enqueued_us=pa.array([micros(e.enqueued_time) for e in events], pa.int64()),
            bodies=pa.array([e.body for e in events], pa.binary()),
        )


def micros(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class PartitionInfo:
    """A partition's head: ``last_sequence_number`` is -1 while the partition is empty."""

    partition: int
    last_sequence_number: int
    last_enqueued_time: datetime | None


class EventBus(ABC):
    """Partitioned append-only log."""

    @property
    @abstractmethod
    def partition_count(self) -> int:
        """Number of partitions (ids 0..n-1)."""

    @abstractmethod
    def send(self, events: Sequence[OutgoingEvent]) -> None:
        """Durably append; order is kept among events with the same partition key."""

    @abstractmethod
    def read(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> list[ReceivedEvent]:
        """Up to ``max_count`` events with sequence number > ``after_sequence_number``, in order."""

    def read_columns(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> ReceivedColumns:
        """What :meth:`read` returns, column by column. This default transposes :meth:`read`
        (Event Hubs delivers event objects anyway); the local log reads the columns straight
        from SQLite."""
        return ReceivedColumns.of(partition, self.read(partition, after_sequence_number, max_count))

    @abstractmethod
    def partition_info(self, partition: int) -> PartitionInfo:
        """The partition's last enqueued sequence number and time."""

    def partitions_info(self) -> list[PartitionInfo]:
        """Every partition's head."""
        return [self.partition_info(p) for p in range(self.partition_count)]

    def publish(self, events: Sequence[EventEnvelope]) -> None:
        """Send domain events keyed by aggregate id."""
        self.send([OutgoingEvent.of(e) for e in events])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
