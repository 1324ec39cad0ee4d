"""``python -m cqrs_dagster_tests.eventhubs_server``: serve Event Hubs over plain AMQP on 127.0.0.1.

Clients connect with ``Endpoint=sb://127.0.0.1:PORT;SharedAccessKeyName=R;SharedAccessKey=K;
UseDevelopmentEmulator=true``. The server prints ``listening on HOST:PORT`` once it accepts.
With ``--journal FILE`` accepted events survive a kill: a server started again on the same file
holds them at the same sequence numbers and offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from .connection import Connection
from .store import Store


async def serve(host: str, port: int, partitions: int, journal: Path | None = None) -> None:
    store = Store(partitions, journal)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await Connection(reader, writer, store).run()
        except Exception:
            logging.getLogger("eventhubs_server").exception("connection failed")

    server = await asyncio.start_server(on_client, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]} with {partitions} partitions per hub", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each new hub")
    parser.add_argument("--journal", type=Path, help="make accepted events durable in this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.partitions, args.journal))


if __name__ == "__main__":
    main()
