"""uvicorn's httptools protocol, sending each response head together with its body.

uvicorn writes a response's status line and headers as soon as the app starts the response,
then the body in a second ``transport.write``: two ``send`` syscalls and two TCP segments, so
two wake-ups of the client, per small JSON response. On loopback at thousands of commands/s the
first of those writes is the single most expensive line of the request path (profiled with
py-spy). :class:`CoalescingHttpToolsProtocol` holds a head that declares a ``content-length``
until the body's first write and sends both at once. Nothing else changes: chunked (streaming)
responses, ``100 Continue`` and upgrades pass straight through, and a held head is flushed if
the connection closes first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport proxy that delays a content-length response head until its body."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + bytes(data))
            return
        if (
            isinstance(data, bytes)
            and data.startswith(b"HTTP/1.1 ")
            and not data.startswith(b"HTTP/1.1 1")  # 100 Continue / 101: never held
            and data.endswith(b"\r\n\r\n")
            and b"\r\ncontent-length: " in data
        ):
            self._head = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=CoalescingHttpToolsProtocol)``: one write per small response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        assert isinstance(self.transport, _CoalescingTransport)
        self.transport.flush()
        self.transport = self.transport._transport
        super().handle_websocket_upgrade()
