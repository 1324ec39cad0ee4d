"""web.server: a content-length response head leaves in the same write as its body; nothing else
is held (chunked responses, 100 Continue); a held head is flushed if the connection closes; and a
real uvicorn server with the protocol answers keep-alive requests byte-for-byte."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from cqrs_dagster.web.server import CoalescingHttpToolsProtocol, _CoalescingTransport

HEAD = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def proxy() -> tuple[_CoalescingTransport, Recorder]:
    recorder = Recorder()
    return _CoalescingTransport(recorder), recorder  # type: ignore[arg-type]


def test_head_and_body_leave_in_one_write() -> None:
    transport, recorder = proxy()
    transport.write(HEAD)
    assert recorder.writes == []
    transport.write(b"{}")
    assert recorder.writes == [HEAD + b"{}"]
    transport.write(HEAD)  # the next response on the keep-alive connection
    transport.write(b"[]")
    assert recorder.writes[1:] == [HEAD + b"[]"]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
    ],
)
def test_other_writes_pass_straight_through(data: bytes) -> None:
    transport, recorder = proxy()
    transport.write(data)
    assert recorder.writes == [data]


def test_close_flushes_a_held_head_first() -> None:
    transport, recorder = proxy()
    transport.write(HEAD)
    transport.close()
    assert recorder.writes == [HEAD] and recorder.closed
    assert transport.is_closing()  # everything else is the real transport's


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="error"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(instance.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if instance.started:
                break
            threading.Event().wait(0.05)
        yield port
    finally:
        instance.should_exit = True
        thread.join(10)


def test_real_server_answers_keep_alive_requests(server: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as http:
        for path in ("/a", "/bb", "/ccc"):
            response = http.get(path)
            assert response.status_code == 200 and response.content == path.encode()
            assert response.headers["content-length"] == str(len(path))
