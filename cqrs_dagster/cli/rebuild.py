"""``cqrs rebuild <read_model>``: replay raw_events into a shadow table, compare, swap it into the
live table with one Delta commit; ``--rollback`` puts back the version before the last swap.

Progress goes to stderr as a plain text bar; the result (one ``key: value`` per line) to stdout.
Exit codes: 0 swapped (or rolled back), 1 shadow != live and no ``--force`` (nothing switched), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from cqrs_dagster.projections.rebuild import REBUILDABLE, describe, rebuild, rollback
from cqrs_dagster.settings import SettingsError, load_settings
from cqrs_dagster.wiring import make_table_store

WIDTH = 30


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rebuild",
        help="rebuild a read model from raw_events and switch readers to it",
        description=(
            "Replay raw_events into a shadow Delta table with the live projection code, compare "
            "it with the live table at the same checkpoint and, if equal (or with --force), "
            "overwrite the live table with it in one Delta commit that keeps its checkpoints. "
            "--rollback puts back the version before the last rebuild (time travel)."
        ),
    )
    parser.add_argument("read_model", choices=REBUILDABLE, help="the read model to rebuild")
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (CQRS_DATA_DIR)")
    parser.add_argument(
        "--force", action="store_true", help="switch even when the rebuild differs from live"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="put back the rows and checkpoints the live table had before its last rebuild",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="raw events per replay batch (default CQRS_PROJECTION_BATCH_SIZE)",
    )
    parser.set_defaults(func=run)


class Bar:
    """A text progress bar redrawn in place (``\\r``), at most every ``every`` seconds."""

    def __init__(self, out: TextIO, label: str, every: float = 0.2) -> None:
        self.out, self.label, self.every = out, label, every
        self.last = 0.0
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        share = 1.0 if total <= 0 else min(1.0, done / total)
        filled = int(share * WIDTH)
        rate = done / max(now - self.started, 1e-9)
        self.out.write(
            f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {share:6.1%} "
            f"{done}/{total} events {rate:,.0f}/s"
        )
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    if args.batch_size is not None and args.batch_size < 1:
        print("cqrs rebuild: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings(data_dir=args.data_dir)
        tables = make_table_store(settings)
    except (SettingsError, ValueError, OSError) as exc:
        print(f"cqrs rebuild: {exc}", file=sys.stderr)
        return 2
    if args.rollback:
        try:
            version = rollback(tables, args.read_model, run_id=f"cli-{uuid.uuid4().hex[:12]}")
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"cqrs rebuild: {exc}", file=sys.stderr)
            return 2
        print(
            f"rolled {args.read_model} back to the version before its last rebuild "
            f"(Delta version {version}); the projection re-applies later events"
        )
        return 0
    bar = Bar(sys.stderr, args.read_model)
    try:
        report = rebuild(
            tables,
            args.read_model,
            run_id=f"cli-{uuid.uuid4().hex[:12]}",
            progress=bar,
            batch_size=args.batch_size or settings.projection_batch_size,
            force=args.force,
        )
    except (ValueError, RuntimeError) as exc:
        bar.close()
        print(f"cqrs rebuild: {exc}", file=sys.stderr)
        return 2
    bar.close()
    facts = describe(report)
    for key, value in facts.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key}: {shown}")
    events_per_s = report.events_replayed / report.seconds if report.seconds else 0.0
    print(f"time: {report.seconds:.2f} s ({events_per_s:,.0f} events/s)")
    if not report.switched:
        print(
            f"cqrs rebuild: the rebuilt {report.table} differs from the live table in "
            f"{report.comparison.differing_keys} key(s) (first: "
            f"{', '.join(report.comparison.first_differences)}); nothing switched. "
            "Re-run with --force to replace the live table with the rebuild.",
            file=sys.stderr,
        )
        return 1
    print(
        f"swapped the rebuilt {report.table} into the live table (Delta version "
        f"{report.version}); roll back with: cqrs rebuild {report.table} --rollback"
    )
    return 0
