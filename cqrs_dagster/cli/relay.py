"""``cqrs relay``: run the outbox relay (write store outbox -> event bus) as its own process."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from cqrs_dagster.settings import SettingsError, load_settings
from cqrs_dagster.wiring import CommandSide

log = logging.getLogger("cqrs_dagster.cli.relay")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "relay",
        help="publish committed outbox events to the event bus",
        description=(
            "Relay events from the write store's outbox to the event bus (at-least-once, "
            "in order per aggregate) until SIGTERM/SIGINT."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory of the local write store and bus (default: CQRS_DATA_DIR or .cqrs)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="publish everything pending, print how many, and exit",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="stop once the process with this pid is no longer the parent (how `cqrs api` runs it)",
    )
    parser.set_defaults(func=run)


#: How often a relay run with --parent-pid looks whether its parent is still there.
PARENT_CHECK_SECONDS = 1.0


def _stop_when_orphaned(parent_pid: int, stop: threading.Event) -> None:
    """Set ``stop`` once this process's parent is no longer ``parent_pid`` (it died: the child
    was handed to another parent), so a killed API leaves no relay behind."""
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone, stopping", parent_pid)
            stop.set()


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = load_settings(data_dir=args.data_dir)
        settings.validate_for_env(read_store=False)
        side = CommandSide(settings)
    except (SettingsError, ValueError, OSError) as exc:
        print(f"cqrs relay: {exc}", file=sys.stderr)
        return 2
    try:
        relay = side.relay()
    except (SettingsError, ValueError, OSError) as exc:
        side.close()
        print(f"cqrs relay: {exc}", file=sys.stderr)
        return 2
    try:
        if args.once:
            try:
                published = relay.drain()
            except Exception as exc:
                print(f"cqrs relay: publishing failed: {exc}", file=sys.stderr)
                return 1
            print(f"published {published} events")
            return 0
        stop = threading.Event()

        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        # Run by `cqrs api` (--parent-pid), Ctrl-C reaches the whole foreground group: the
        # parent stops this child itself.
        signal.signal(signal.SIGINT, _stop if args.parent_pid is None else signal.SIG_IGN)
        if args.parent_pid is not None:
            if os.getppid() != args.parent_pid:
                print(f"cqrs relay: parent process {args.parent_pid} is gone", file=sys.stderr)
                return 1
            threading.Thread(
                target=_stop_when_orphaned,
                args=(args.parent_pid, stop),
                name="parent-watch",
                daemon=True,
            ).start()
        log.info(
            "relaying outbox -> event bus (env=%s, data dir %s; idle interval %.2f s)",
            settings.env,
            settings.data_dir,
            settings.relay_interval_seconds,
        )
        relay.run_forever(stop, settings.relay_interval_seconds)
        log.info("stopped after publishing %d events", relay.published_total)
        return 0
    finally:
        side.close()
