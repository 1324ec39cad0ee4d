"""The Event Hubs event bus (``azure-eventhub``): the Azure adapter of the EventBus port.

- **Auth.** A connection string (SAS key; also the local test server's
  ``...;UseDevelopmentEmulator=true``), or a fully qualified namespace with an Entra ID credential
  (``DefaultAzureCredential``: see :func:`cqrs_dagster.wiring.make_eventhubs_bus`).
- **send.** Events are batched ACROSS aggregates, per partition (as the SDK's buffered mode does):
  each partition key (the aggregate id) is mapped to its partition with Event Hubs' own hash (the
  SDK's ``PartitionResolver``, Jenkins lookup3, the function the service applies to keys), and all
  events of one partition go out in ``EventDataBatch``es created with that ``partition_id``, each
  event keeping its key in ``x-opt-partition-key``. Events of one key land in one partition in the
  order given, so per-aggregate order holds; a relay round of 500 aggregates costs about one send
  per partition instead of 500. A partition whose events do not fit in one batch (the link's max
  message size, 1 MB on Standard) is split over several, in order. ``send`` returns only after
  every batch was accepted and raises otherwise (the relay then marks nothing published; batches
  already accepted are re-sent next round: at-least-once). ``sends`` counts accepted batches.
- **read.** A bounded read of one partition. The partition's head (``get_partition_properties``)
  says how many events exist after ``after_sequence_number``: none -> ``[]`` at once, so an empty
  answer always means "nothing there", never "not arrived yet". Otherwise ``receive_batch`` starts
  right after that sequence number (exclusive) with ``max_batch_size`` = the events expected, and
  the callback stops the receive (``close()``, the SDK's one public way to end a receive) as soon
  as they are all in. ``max_wait_time`` only paces the callback while waiting; after
  ``read_timeout`` a non-empty prefix is returned, an empty one raises.
- **Clients.** One producer client for the bus's lifetime (sends and management reads). Each read
  uses its own consumer client, because ``close()`` (the stop) ends every receive of a client:
  concurrent reads of different partitions must not stop each other. By default the SDK opens a
  connection per link anyway, so a long-lived consumer client would save no connection.
- **Partitions.** Ids ``"0".."n-1"`` map to ints; the count is read once (it is fixed per hub).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._buffered_producer._partition_resolver import PartitionResolver

from .port import EventBus, OutgoingEvent, PartitionInfo, ReceivedEvent

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.eventhub import PartitionContext

_PREFETCH_CAP = 2_000


class EventHubsReadError(RuntimeError):
    """A read found events on the partition head but received none in time."""


class EventHubsBus(EventBus):
    """EventBus on one event hub (see the module docstring for the semantics)."""

    def __init__(
        self,
        *,
        eventhub_name: str,
        consumer_group: str = "$Default",
        connection_string: str | None = None,
        fully_qualified_namespace: str | None = None,
        credential: TokenCredential | None = None,
        read_wait_seconds: float = 0.5,
        read_timeout_seconds: float = 30.0,
        **client_options: Any,
    ) -> None:
        if (connection_string is None) == (fully_qualified_namespace is None):
            raise ValueError("give either connection_string or fully_qualified_namespace")
        if fully_qualified_namespace is not None and credential is None:
            raise ValueError("fully_qualified_namespace needs a credential (Entra ID)")
        self.eventhub_name = eventhub_name
        self.consumer_group = consumer_group
        self._connection_string = connection_string
        self._namespace = fully_qualified_namespace
        self._credential = credential
        self._read_wait = read_wait_seconds
        self._read_timeout = read_timeout_seconds
        self._options = client_options
        self._producer = self._make(EventHubProducerClient)
        self._send_lock = threading.Lock()
        self._mgmt_lock = threading.Lock()
        self._partition_count: int | None = None
        self._partition_resolver: Any = None
        self.sends = 0
        self._workers: list[threading.Thread] = []

    def _make(self, client_cls: Any, **extra: Any) -> Any:
        options = {**self._options, **extra}
        if self._connection_string is not None:
            return client_cls.from_connection_string(
                self._connection_string, eventhub_name=self.eventhub_name, **options
            )
        return client_cls(
            fully_qualified_namespace=self._namespace,
            eventhub_name=self.eventhub_name,
            credential=self._credential,
            **options,
        )

    @property
    def fully_qualified_namespace(self) -> str | None:
        """The namespace given for Entra ID auth (None with a connection string)."""
        return self._namespace

    @property
    def partition_count(self) -> int:
        if self._partition_count is None:
            with self._mgmt_lock:
                ids = self._producer.get_partition_ids()
            if sorted(ids, key=int) != [str(i) for i in range(len(ids))]:
                raise RuntimeError(f"unexpected partition ids {ids!r}: expected '0'..'n-1'")
            self._partition_count = len(ids)
        return self._partition_count

    def send(self, events: Sequence[OutgoingEvent]) -> None:
        if not events:
            return
        resolver = self._resolver()
        by_partition: dict[str, list[OutgoingEvent]] = {}
        for event in events:
            pid: str = resolver.get_partition_id_by_partition_key(event.partition_key)
            by_partition.setdefault(pid, []).append(event)
        with self._send_lock:
            for pid, group in by_partition.items():
                self._send_partition(pid, group)

    def _resolver(self) -> Any:
        if self._partition_resolver is None:
            ids = [str(i) for i in range(self.partition_count)]
            self._partition_resolver = PartitionResolver(ids)  # type: ignore[no-untyped-call]
        return self._partition_resolver

    def partition_of(self, partition_key: str) -> int:
        """The partition Event Hubs puts ``partition_key`` in (its own hash, as the SDK computes)."""
        return int(self._resolver().get_partition_id_by_partition_key(partition_key))

    def _send_partition(self, partition_id: str, group: list[OutgoingEvent]) -> None:
        batch = self._producer.create_batch(partition_id=partition_id)
        for event in group:
            data = _keyed(event)
            try:
                batch.add(data)
            except ValueError:
                if len(batch) == 0:
                    raise ValueError(
                        f"an event of {len(event.body)} bytes does not fit in one Event Hubs message"
                    ) from None
                self._send_batch(batch)
                batch = self._producer.create_batch(partition_id=partition_id)
                batch.add(data)
        if len(batch):
            self._send_batch(batch)

    def _send_batch(self, batch: Any) -> None:
        self._producer.send_batch(batch)
        self.sends += 1

    def partition_info(self, partition: int) -> PartitionInfo:
        partition_id = self._partition_id(partition)
        with self._mgmt_lock:  # one client may serve several threads (a shared bus)
            props = self._producer.get_partition_properties(partition_id)
        last = int(props["last_enqueued_sequence_number"])
        if last < 0:  # never written (a partition emptied by retention keeps its head)
            return PartitionInfo(partition, -1, None)
        enqueued: datetime = props["last_enqueued_time_utc"]
        return PartitionInfo(partition, last, enqueued.astimezone(UTC))

    def read(
        self, partition: int, after_sequence_number: int, max_count: int
    ) -> list[ReceivedEvent]:
        partition_id = self._partition_id(partition)
        if max_count < 1:
            return []
        head = self.partition_info(partition).last_sequence_number
        expected = min(max_count, head - after_sequence_number)
        if expected <= 0:
            return []
        received = self._receive(partition_id, after_sequence_number, expected)
        return [_received(partition, e) for e in received[:expected]]

    def _receive(self, partition_id: str, after: int, expected: int) -> list[EventData]:
        consumer = self._make(
            EventHubConsumerClient, consumer_group=self.consumer_group, load_balancing_interval=1
        )
        lock = threading.Lock()
        got: list[EventData] = []
        errors: list[Exception] = []
        done = threading.Event()

        def on_batch(_: PartitionContext, events: list[EventData]) -> None:
            with lock:
                got.extend(events)
                if len(got) >= expected:
                    done.set()
                    consumer.close()

        def on_error(_: PartitionContext, error: Exception) -> None:
            with lock:
                errors.append(error)
            done.set()
            consumer.close()

        def run() -> None:
            try:
                consumer.receive_batch(
                    on_batch,
                    partition_id=partition_id,
                    # "-1": the start-of-stream offset; else strictly after the sequence number.
                    starting_position="-1" if after < 0 else after,
                    starting_position_inclusive=False,
                    max_batch_size=expected,
                    max_wait_time=self._read_wait,
                    prefetch=min(expected, _PREFETCH_CAP),
                    on_error=on_error,
                )
            except Exception as exc:  # surfaced to the reader below
                with lock:
                    errors.append(exc)
            finally:
                done.set()
                consumer.close()

        # The SDK tears a receiver down slowly (it joins a keep-alive thread that sleeps 1 s):
        # the receive runs on its own thread and the read returns as soon as the events are in.
        worker = threading.Thread(target=run, name=f"eventhubs-read-{partition_id}", daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        if not done.wait(self._read_timeout):
            consumer.close()
        with lock:
            received, failures = list(got), list(errors)
        if not received:
            if failures:
                raise failures[0]
            raise EventHubsReadError(
                f"partition {partition_id} of {self.eventhub_name!r} has events after "
                f"{after} but none arrived within {self._read_timeout}s"
            )
        return received

    def _partition_id(self, partition: int) -> str:
        if not 0 <= partition < self.partition_count:
            raise ValueError(f"partition {partition} out of range 0..{self.partition_count - 1}")
        return str(partition)

    def close(self) -> None:
        """Close the producer and wait (bounded) for finished reads to tear their receivers down."""
        self._producer.close()
        for worker in self._workers:
            worker.join(timeout=5)
        self._workers = []


def _received(partition: int, event: EventData) -> ReceivedEvent:
    key = event.partition_key
    enqueued = event.enqueued_time
    if event.sequence_number is None or event.offset is None or enqueued is None:
        raise ValueError("received an event without its Event Hubs position annotations")
    return ReceivedEvent(
        partition=partition,
        sequence_number=event.sequence_number,
        offset=str(event.offset),
        enqueued_time=enqueued.astimezone(UTC),
        partition_key=key.decode() if isinstance(key, bytes) else key,
        body=b"".join(cast("Iterable[bytes]", event.body)),
    )


def _keyed(event: OutgoingEvent) -> EventData:
    """The event with its partition key annotation (``x-opt-partition-key``), as the SDK's
    buffered mode sets it on events sent to a partition id."""
    data = EventData(event.body)
    message = data.raw_amqp_message
    if message.annotations is None:
        message.annotations = {}
    message.annotations[b"x-opt-partition-key"] = event.partition_key
    return data
