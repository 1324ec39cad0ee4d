"""``cqrs api``: serve the HTTP API (commands, queries, health) under uvicorn."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cqrs_dagster.settings import SettingsError, load_settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "api",
        help="serve the command and query HTTP API",
        description="Serve the HTTP API under uvicorn; by default it also runs the outbox relay.",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (CQRS_DATA_DIR)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--no-relay",
        action="store_true",
        help="do not run the outbox relay in the API process (run `cqrs relay` instead)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `cqrs --help` and the other subcommands need neither FastAPI nor uvicorn.
    import uvicorn

    from cqrs_dagster.web.app import build_app
    from cqrs_dagster.web.security import SecurityConfigError, check_bind

    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)-9s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(data_dir=args.data_dir)
        settings.validate_for_env()
        check_bind(args.host, settings)
        app = build_app(settings, run_relay=not args.no_relay)
    except (SecurityConfigError, SettingsError) as exc:
        print(f"cqrs api: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"CQRS_{str(first['loc'][0]).upper()}" if first["loc"] else "settings"
        print(f"cqrs api: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    # The ~80k objects of the imports and the app live as long as the process: move them out of
    # the cyclic GC's reach, so that a full collection under load walks only request garbage
    # (measured: 30 ms -> ~0 ms per full collection, a visible part of the p99 at 1,000/s).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        http=_http_protocol(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=_logs_access(args.log_level),
        timeout_graceful_shutdown=10,
    )
    return 0


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
