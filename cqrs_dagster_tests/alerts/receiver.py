"""A local HTTP receiver (127.0.0.1, http.server in a thread) that records what it is sent.

``status`` is the HTTP status it answers with (200 by default, anything else to simulate an outage);
every request is recorded, answered or not. It answers ``{"ok": true}`` so Slack's client accepts it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    answered: int


@dataclass
class Receiver:
    url: str
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> list[Any]:
        """Bodies of the requests that were answered 2xx."""
        with self.lock:
            return [r.body for r in self.requests if 200 <= r.answered < 300]

    def attempts(self) -> int:
        with self.lock:
            return len(self.requests)


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            status = receiver.status
            with receiver.lock:
                receiver.requests.append(
                    Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                    )
                )
            answer = json.dumps({"ok": 200 <= status < 300}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """Start a receiver, stop it (and close its socket) on exit."""
    rec, server = start_receiver()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
