"""``cqrs api``: serve the HTTP API (commands, queries, health) under uvicorn or granian.

The default server is uvicorn (uvloop, httptools, one write per response). ``--server granian``
serves with granian (HTTP parsing and socket I/O in Rust, outside the GIL) in one worker
process with a single-threaded runtime. Measured for issue 14 (``POST /api/v1/commands`` under
wrk, load generator on the same 2 cores): granian served 1.5-1.7x the commands/s while other
work saturated the CPUs, but on a quiet machine the two were even (medians ~2,950/s each over 6
interleaved pairs) and uvicorn's p99 at 1,000/s was lower (15 vs 35 ms), so uvicorn stays the
default.

Under granian the app is built in the worker, which granian forks from this process (settings
are loaded and checked here first, so a bad setting exits 2 before anything is served); the
worker runs the app's lifespan, hence its group committer and outbox relay, exactly as uvicorn
does in-process. One worker: the group committer is the only writer of the process and the relay
runs once.

Either server serves the command and order-lookup fast paths in front of the app (see
:func:`_served`).

uvicorn runs on asyncio's own event loop, not uvloop (:data:`UVICORN_LOOP`). uvloop writes a
response to its socket inside the event loop with the GIL held, and on loopback that ``send``
(the kernel's TCP work and the client's wake-up) was 31% of the API process's GIL samples under
wrk: the group-commit writer and the relay waited through every response written. asyncio's
transport writes with ``socket.send``, which releases the GIL for the syscall. Measured for issue
14 (b) (``POST /api/v1/commands`` under wrk, 64 connections, 4 interleaved pairs of 12 s, three
times; ``bench/experiments/http_ab.py``): 5,661 -> 6,180, 5,507 -> 6,030 and 5,263 -> 5,912
commands/s (+9-12%), p99 at 1,000/s 3-4 ms either way.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cqrs_dagster.settings import SettingsError, load_settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "api",
        help="serve the command and query HTTP API",
        description=(
            "Serve the HTTP API (uvicorn, or granian with --server granian); by default it also "
            "runs the outbox relay, as a supervised `cqrs relay` child process."
        ),
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (CQRS_DATA_DIR)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    relay = parser.add_mutually_exclusive_group()
    relay.add_argument(
        "--no-relay",
        action="store_true",
        help="run no outbox relay (run `cqrs relay` yourself)",
    )
    relay.add_argument(
        "--relay-thread",
        action="store_true",
        help="run the outbox relay as a thread of the API process instead of the default "
        "supervised `cqrs relay` child process",
    )
    parser.add_argument("--log-level", default="info", help="server log level (default info)")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="uvicorn",
        help="HTTP server (default uvicorn: see the module doc for why not granian)",
    )
    parser.set_defaults(func=run)


SERVERS = ("granian", "uvicorn")


def run(args: argparse.Namespace) -> int:
    # Imported here: `cqrs --help` and the other subcommands need neither FastAPI nor a server.
    from cqrs_dagster.web.app import build_app
    from cqrs_dagster.web.security import SecurityConfigError, check_bind

    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)-9s %(name)s: %(message)s"
    )
    server = args.server
    try:
        settings = load_settings(data_dir=args.data_dir)
        settings.validate_for_env()
        check_bind(args.host, settings)
        relay = {"run_relay": not args.no_relay, "relay_process": not args.relay_thread}
        if server == "granian":
            return _serve_granian(args, lambda: _served(build_app(settings, **relay)))
        app = _served(build_app(settings, **relay))
    except (SecurityConfigError, SettingsError) as exc:
        print(f"cqrs api: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"CQRS_{str(first['loc'][0]).upper()}" if first["loc"] else "settings"
        print(f"cqrs api: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    import uvicorn

    _freeze_gc()
    uvicorn.run(
        app,
        http=_http_protocol(),
        loop=UVICORN_LOOP,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=_logs_access(args.log_level),
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    return 0


def _served(app: Any) -> Any:
    """What the server calls: the command and order-lookup fast paths in front of the app's
    middleware stack.

    Measured in-process (64 concurrent POSTs through the ASGI app and the group commit):
    129.8 -> 102.9 us CPU per command (issue 14 b). ``GET /api/v1/orders/{id}`` (read-your-writes
    bursts) skips the same layers. Every other request reaches ``app`` as is.
    """
    from cqrs_dagster.web.commands import CommandFastPath
    from cqrs_dagster.web.query_fast_path import OrderLookupFastPath

    lookups = OrderLookupFastPath.in_front_of(app)
    return CommandFastPath(lookups, front_of=app)


def _freeze_gc() -> None:
    """Move the ~80k long-lived objects of the imports and the app out of the cyclic GC's reach.

    A full collection under load then walks only request garbage (measured: 30 ms -> ~0 ms per
    full collection, a visible part of the p99 at 1,000/s).
    """
    gc.collect()
    gc.freeze()


def _serve_granian(args: argparse.Namespace, build: Callable[[], Any]) -> int:
    """Serve under granian: one forked worker builds the app (``build``) and runs its lifespan.

    ``build`` runs in the worker, so the app's threads (group committer, relay) and connections
    are the worker's own. A worker that fails to start (its lifespan raised) makes this exit 1.
    """
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes
    from granian.log import LogLevels

    def load() -> Any:
        app = build()
        _freeze_gc()
        return app

    level = args.log_level.lower()
    server = Granian(
        "cqrs_dagster.web.app:build_app",  # the name granian logs; `load` builds the app
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=1,
        runtime_mode=RuntimeModes.st,
        runtime_threads=1,
        loop=Loops.uvloop if _has_uvloop() else Loops.asyncio,
        websockets=False,
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_access=_logs_access(args.log_level),
        workers_kill_timeout=GRACEFUL_SECONDS,
    )
    server.serve(target_loader=load, wrap_loader=False)
    return 0


GRACEFUL_SECONDS = 10
#: uvicorn's event loop: asyncio's, whose socket writes release the GIL (see the module doc).
UVICORN_LOOP = "asyncio"


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return False
    return True


def _logs_access(log_level: str) -> bool:
    """The access log is INFO: above that level, skip the per-request log call altogether."""
    level = logging.getLevelName(log_level.upper())
    return not isinstance(level, int) or level <= logging.INFO


def _http_protocol() -> Any:
    """httptools with one write per response (web.server) when httptools is installed."""
    try:
        from cqrs_dagster.web.server import CoalescingHttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools missing: uvicorn picks h11
        return "auto"
    return CoalescingHttpToolsProtocol
