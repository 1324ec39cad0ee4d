"""One AMQP 1.0 connection of the test server: SASL, sessions, links, CBS, management, events.

Plays the Event Hubs side of every exchange the azure-eventhub SDK starts; see README.md for what
is and is not implemented. Single-threaded on asyncio: the store is shared by all connections.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from azure.eventhub._pyamqp.endpoints import Source, Target
from azure.eventhub._pyamqp.error import AMQPError
from azure.eventhub._pyamqp.outcomes import Accepted
from azure.eventhub._pyamqp.performatives import (
    AttachFrame,
    BeginFrame,
    CloseFrame,
    DetachFrame,
    DispositionFrame,
    EndFrame,
    FlowFrame,
    OpenFrame,
    SASLMechanism,
    SASLOutcome,
    TransferFrame,
)
from azure.eventhub._pyamqp.types import AMQPTypes

from . import codec
from .store import NotFound, Partition, Store

log = logging.getLogger("eventhubs_server")

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
MAX_FRAME_SIZE = 256 * 1024
MAX_MESSAGE_SIZE = 1024 * 1024  # Event Hubs Standard tier
WINDOW = 2**31 - 1
SENDER_CREDIT = 5000
SELECTOR = b"apache.org:selector-filter:string"
_TRANSFER, _FLOW, _ATTACH, _DETACH = 0x14, 0x13, 0x12, 0x16
_OPEN, _BEGIN, _DISPOSITION, _END, _CLOSE = 0x10, 0x11, 0x15, 0x17, 0x18


@dataclass(eq=False)
class Link:
    session: Session
    handle: int
    name: bytes
    client_sends: bool
    address: str
    kind: str  # "cbs" | "management" | "events"
    partition: Partition | None = None
    hub: str = ""
    # Links on which the server sends (client receivers).
    next_index: int = 0
    delivery_count: int = 0
    credit: int = 0
    queue: deque[bytes] = field(default_factory=deque)
    # Links on which the server receives (client senders).
    received: int = 0
    granted_until: int = 0
    partial: bytearray = field(default_factory=bytearray)
    first: list[Any] | None = None
    closed: bool = False


@dataclass(eq=False)
class Session:
    channel: int
    remote_window: int
    next_outgoing_id: int = 0
    next_incoming_id: int = 0
    next_delivery_id: int = 0
    links: dict[int, Link] = field(default_factory=dict)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, store: Store):
        self.reader, self.writer, self.store = reader, writer, store
        self.sessions: dict[int, Session] = {}
        self.remote_max_frame = 512
        self.closed = False

    # -- framing ---------------------------------------------------------------------------
    def send(self, channel: int, performative: Any, frame_type: bytes = codec.AMQP_FRAME) -> None:
        if not self.closed:
            self.writer.write(codec.frame_bytes(channel, performative, frame_type))

    async def read_frame(self) -> tuple[int, int, list[Any]] | None:
        while True:
            head = await self.reader.readexactly(8)
            size, doff, _, channel = struct.unpack(">IBBH", head)
            body = await self.reader.readexactly(size - 8)
            if size == 8:
                continue  # heartbeat
            code, fields = codec.decode_frame(memoryview(body)[doff * 4 - 8 :])
            return channel, code, fields

    async def run(self) -> None:
        try:
            await self.handshake()
            while not self.closed:
                frame = await self.read_frame()
                if frame is None:
                    break
                self.dispatch(*frame)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.shutdown()

    async def handshake(self) -> None:
        if await self.reader.readexactly(8) != SASL_HEADER:
            raise ConnectionError("expected the SASL protocol header")
        self.writer.write(SASL_HEADER)
        self.send(0, SASLMechanism(sasl_server_mechanisms=[b"ANONYMOUS"]), codec.SASL_FRAME)
        await self.read_frame()  # sasl-init: every mechanism is accepted
        self.send(0, SASLOutcome(code=0, additional_data=None), codec.SASL_FRAME)
        if await self.reader.readexactly(8) != AMQP_HEADER:
            raise ConnectionError("expected the AMQP protocol header")
        self.writer.write(AMQP_HEADER)

    def shutdown(self) -> None:
        self.closed = True
        for session in self.sessions.values():
            for link in session.links.values():
                self.forget(link)
        self.sessions.clear()
        self.writer.close()

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, channel: int, code: int, f: list[Any]) -> None:
        session = self.sessions.get(channel)
        if code in (_TRANSFER, _FLOW, _DISPOSITION, _ATTACH, _DETACH) and session is None:
            return  # a frame for a session that has ended (clients pipeline detach after end)
        if code == _TRANSFER:
            self.on_transfer(session, f)  # type: ignore[arg-type]
        elif code == _FLOW:
            self.on_flow(session, f)  # type: ignore[arg-type]
        elif code == _DISPOSITION:
            pass  # receivers' outcomes: deliveries to them are pre-settled
        elif code == _ATTACH:
            self.on_attach(session, f)  # type: ignore[arg-type]
        elif code == _DETACH:
            self.on_detach(session, f)  # type: ignore[arg-type]
        elif code == _OPEN:
            self.remote_max_frame = f[2] or 2**32 - 1
            self.send(0, OpenFrame("cqrs-eventhubs-test-server", None, MAX_FRAME_SIZE, 65535,
                                   None, None, None, None, None, None))  # fmt: skip
        elif code == _BEGIN:
            self.sessions[channel] = Session(channel, remote_window=f[2])
            self.send(channel, BeginFrame(channel, 0, WINDOW, WINDOW, 65535, None, None, None))
        elif code == _END:
            session = self.sessions.pop(channel, None)
            for link in session.links.values() if session else ():
                self.forget(link)
            self.send(channel, EndFrame(error=None))
        elif code == _CLOSE:
            self.send(0, CloseFrame(error=None))
            self.closed = True

    # -- links ------------------------------------------------------------------------------
    def on_attach(self, session: Session, f: list[Any]) -> None:
        name, handle, client_role = f[0], f[1], f[2]
        client_sends = client_role is False
        source, target = f[5], f[6]
        endpoint = target if client_sends else source
        address = (endpoint[0] or b"").decode() if endpoint else ""
        node = address.split("://", 1)[-1].rpartition("/")[2] if "://" in address else address
        kind = {"$cbs": "cbs", "$management": "management"}.get(node, "events")
        link = Link(session, handle, name, client_sends, address, kind)
        error: AMQPError | None = None
        selector: str | None = None
        if kind == "events":
            try:
                hub, link.partition = self.store.resolve(address)
                link.hub = hub.name
                if not client_sends:
                    if link.partition is None:
                        raise NotFound(f"receive needs a partition address, got {address!r}")
                    filters = source[7] if source and len(source) > 7 else None
                    raw = (filters or {}).get(SELECTOR)
                    selector = raw.decode() if isinstance(raw, bytes) else raw
                    link.next_index = link.partition.start_index(selector)
            except (NotFound, ValueError) as exc:
                error = AMQPError(condition=b"amqp:not-found", description=str(exc))
        echo_source = Source(
            address=(source[0] if source else address.encode()),
            filters={SELECTOR: (SELECTOR, {"TYPE": AMQPTypes.string, "VALUE": selector})}
            if selector
            else None,
        )
        echo_target = Target(address=(target[0] if target else address.encode()))
        self.send(
            session.channel,
            AttachFrame(
                name, handle, not client_role, f[3], f[4], echo_source, echo_target, None, False,
                None if client_sends else 0, MAX_MESSAGE_SIZE if client_sends else None,
                None, None, None,
            ),
        )  # fmt: skip
        if error is not None:
            self.send(session.channel, DetachFrame(handle=handle, closed=True, error=error))
            return
        session.links[handle] = link
        if client_sends:
            self.grant(link)
        elif link.partition is not None:
            link.partition.listeners[link] = lambda: self.pump(link)

    def on_detach(self, session: Session, f: list[Any]) -> None:
        link = session.links.pop(f[0], None)
        if link is not None:
            self.forget(link)
        self.send(session.channel, DetachFrame(handle=f[0], closed=f[1], error=None))

    def forget(self, link: Link) -> None:
        link.closed = True
        if link.partition is not None:
            link.partition.listeners.pop(link, None)

    def grant(self, link: Link) -> None:
        """Top up a client sender's credit when half of it is used."""
        if link.granted_until - link.received <= SENDER_CREDIT // 2:
            link.granted_until = link.received + SENDER_CREDIT
            self.flow(link, delivery_count=link.received, credit=SENDER_CREDIT)

    def flow(self, link: Link, *, delivery_count: int, credit: int) -> None:
        s = link.session
        self.send(
            s.channel,
            FlowFrame(s.next_incoming_id, WINDOW, s.next_outgoing_id, WINDOW, link.handle,
                      delivery_count, credit, None, False, False, None),
        )  # fmt: skip

    def on_flow(self, session: Session, f: list[Any]) -> None:
        next_incoming = f[0] if f[0] is not None else 0
        session.remote_window = next_incoming + f[1] - session.next_outgoing_id
        link = session.links.get(f[4]) if f[4] is not None else None
        if link is not None and not link.client_sends:
            link.credit = f[5] + f[6] - link.delivery_count if f[5] is not None else f[6]
            self.pump(link)
        elif f[4] is None:
            for other in list(session.links.values()):
                if not other.client_sends:
                    self.pump(other)

    # -- deliveries to clients ---------------------------------------------------------------
    def pump(self, link: Link) -> None:
        """Send what the receiver has credit for: queued responses, then partition events."""
        session = link.session
        events = link.partition.events if link.partition is not None else None
        while not link.closed and not self.closed and link.credit > 0 and session.remote_window > 0:
            if link.queue:
                payload = link.queue.popleft()
            elif events is not None and link.next_index < len(events):
                payload = events[link.next_index].payload
                link.next_index += 1
            else:
                break
            self.deliver(link, payload)
            link.credit -= 1
            link.delivery_count += 1

    def deliver(self, link: Link, payload: bytes) -> None:
        session = link.session
        delivery_id = session.next_delivery_id
        session.next_delivery_id += 1
        tag = struct.pack(">I", delivery_id & 0xFFFFFFFF)
        room = max(self.remote_max_frame - 128, 512)
        chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
        for n, chunk in enumerate(chunks):
            more = n < len(chunks) - 1
            frame = TransferFrame(link.handle, delivery_id, tag, 0, True, more, None, None, None,
                                  None, None, chunk)  # fmt: skip
            self.send(session.channel, frame)
            session.next_outgoing_id += 1
            session.remote_window -= 1

    # -- deliveries from clients -------------------------------------------------------------
    def on_transfer(self, session: Session, f: list[Any]) -> None:
        session.next_incoming_id += 1
        link = session.links.get(f[0])
        if link is None:
            return
        if link.first is None:
            link.first = f
        link.partial.extend(f[11])
        if f[5]:  # more
            return
        first, payload = link.first, bytes(link.partial)
        link.first, link.partial = None, bytearray()
        link.received += 1
        if len(payload) > MAX_MESSAGE_SIZE:
            error = AMQPError(
                condition=b"amqp:link:message-size-exceeded",
                description=f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_SIZE}",
            )
            session.links.pop(link.handle, None)
            self.forget(link)
            self.send(session.channel, DetachFrame(handle=link.handle, closed=True, error=error))
            return
        if link.kind == "events":
            self.store_events(link, first[3] or 0, payload)
        else:
            self.answer(link, payload)
        if not first[4]:  # unsettled: accept it
            self.send(
                session.channel, DispositionFrame(True, first[1], first[1], True, Accepted(), None)
            )
        self.grant(link)

    def store_events(self, link: Link, message_format: int, payload: bytes) -> None:
        hub = self.store.hub(link.hub)
        outer = codec.split_sections(payload)
        if message_format == codec.BATCH_FORMAT:
            messages = [codec.split_sections(value) for d, _, value in outer if d == 0x75]
        else:
            messages = [outer]
        key = _partition_key(outer) or next((k for m in messages if (k := _partition_key(m))), None)
        partition = link.partition or hub.route(key)
        for sections in messages:
            size = sum(len(raw) for d, raw, _ in sections if d == 0x75)
            # A batch sent to a partition id may hold several keys (the SDK's buffered mode):
            # each message keeps its own key, else the batch's.
            own_key = _partition_key(sections) or key

            def build(
                seq: int, offset: int, ms: int, sections: Any = sections, own_key: Any = own_key
            ) -> bytes:
                return codec.deliverable(
                    sections,
                    sequence_number=seq,
                    offset=offset,
                    enqueued_ms=ms,
                    partition_key=own_key,
                )

            self.store.append(partition, build, size)
        self.store.sync()
        partition.notify()

    def answer(self, link: Link, payload: bytes) -> None:
        """CBS put-token and management READ requests; the reply goes to the paired receiver."""
        request = codec.decode_payload(memoryview(payload))
        props = {k: v for k, v in (request.application_properties or {}).items()}
        correlation = request.properties.message_id if request.properties else None
        if link.kind == "cbs":
            reply = codec.response_message(correlation, 202, "Accepted")
        else:
            reply = self.management(props, correlation)
        peer = next(
            (
                other
                for other in link.session.links.values()
                if not other.client_sends and other.kind == link.kind and not other.closed
            ),
            None,
        )
        if peer is not None:
            peer.queue.append(reply)
            self.pump(peer)

    def management(self, props: dict[bytes, Any], correlation: Any) -> bytes:
        operation, entity = props.get(b"operation"), props.get(b"type")
        try:
            if operation != b"READ":
                return codec.response_message(
                    correlation, 400, f"unsupported operation {operation!r}"
                )
            hub = self.store.hub((props.get(b"name") or b"").decode())
            if entity == b"com.microsoft:eventhub":
                value = hub.properties()
            elif entity == b"com.microsoft:partition":
                value = hub.partition((props.get(b"partition") or b"").decode()).properties()
            else:
                return codec.response_message(correlation, 400, f"unsupported type {entity!r}")
        except NotFound as exc:
            return codec.response_message(correlation, 404, str(exc))
        return codec.response_message(correlation, 200, "OK", codec.management_value(value))


def _partition_key(sections: list[tuple[int, bytes, Any]]) -> bytes | None:
    for descriptor, _, value in sections:
        if descriptor == 0x72 and value:
            key = value.get(b"x-opt-partition-key")
            if key is not None:
                return key if isinstance(key, bytes) else str(key).encode()
    return None
