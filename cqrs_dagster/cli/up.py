"""``cqrs up``: the whole platform on loopback — command + query API with the outbox relay (a
thread of the API process: see below), and ``dagster dev`` (webserver + daemon) with the sensors
and schedules RUNNING.

Every child runs in its own process group; Ctrl-C / SIGTERM stops each group (TERM, then KILL)
and any stray descendant, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from cqrs_dagster.settings import SettingsError, load_settings

from .procs import descendants, stop_process_tree, stop_signals

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_DAGSTER_YAML = PACKAGE_ROOT.parent / "dagster.yaml"


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run the whole platform locally (API, relay, Dagster)")
    p.add_argument(
        "--data-dir", default=None, help="where all data lives (CQRS_DATA_DIR, default ./.cqrs)"
    )
    p.add_argument("--env", choices=["local", "azure"], default=None, help="adapters (CQRS_ENV)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=8000)
    p.add_argument("--ui-port", type=int, default=3000)
    p.add_argument("--no-dagster", action="store_true", help="only the API and the relay")
    p.add_argument(
        "--follow",
        type=float,
        default=None,
        metavar="SECONDS",
        help=(
            "follow mode: one projection run keeps applying new events for up to SECONDS "
            "(until idle for CQRS_PROJECTION_FOLLOW_IDLE_SECONDS); sets "
            "CQRS_PROJECTION_FOLLOW_SECONDS for Dagster (default: its value, 600; 0 = per-batch runs)"
        ),
    )
    p.add_argument("--demo", action="store_true", help="generate a steady trickle of demo commands")
    p.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default=None,
        help=(
            "projection engine (CQRS_PROJECTION_ENGINE). spark: a local Sail Spark Connect server "
            "is started at CQRS_SPARK_REMOTE (default sc://127.0.0.1:50051) unless one answers "
            "there, and stopped with the rest"
        ),
    )
    p.set_defaults(func=run)


def prepare_dagster_home(data_dir: Path) -> Path:
    """$DAGSTER_HOME under the data dir, with the tuned dagster.yaml and a workspace file."""
    home = data_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    if REPO_DAGSTER_YAML.exists():
        shutil.copyfile(REPO_DAGSTER_YAML, home / "dagster.yaml")
    (home / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: cqrs_dagster.definitions\n"
        "      location_name: cqrs_dagster\n"
    )
    return home


def _wait_http(
    url: str,
    timeout: float,
    procs: list[subprocess.Popen[bytes]],
    stopping: Callable[[], bool] = lambda: False,
) -> bool:
    """Whether ``url`` answers within ``timeout`` (False at once when a child exits or
    ``stopping`` says Ctrl-C came)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping() or any(p.poll() is not None for p in procs):
            return False
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status < 500:
                return True
        time.sleep(0.3)
    return False


def sail_binary() -> str | None:
    """``CQRS_SAIL_BIN``, the checkout's ``.venv-sail`` (``make sail-install``) or ``sail`` on PATH."""
    configured = os.environ.get("CQRS_SAIL_BIN")
    if configured:
        return configured
    local = PACKAGE_ROOT.parent / ".venv-sail" / "bin" / "sail"
    return str(local) if local.exists() else shutil.which("sail")


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def start_sail(remote: str, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """A local Sail server at ``remote`` (its own process group), or None when a server already
    answers there or ``remote`` is not on this machine (then it is the user's to run)."""
    parsed = urlsplit(remote.replace("sc://", "http://", 1))
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 15002
    if host not in ("127.0.0.1", "localhost") or _listening(host, port):
        return None
    binary = sail_binary()
    if binary is None:
        raise RuntimeError(
            "CQRS_PROJECTION_ENGINE=spark needs a Spark Connect server: `make sail-install` "
            f"(pysail in .venv-sail), CQRS_SAIL_BIN, or a server at CQRS_SPARK_REMOTE ({remote})"
        )
    cmd = [binary, "spark", "server", "--ip", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while not _listening(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_tree(proc)
            raise RuntimeError(f"the Sail server ({' '.join(cmd)}) did not start")
        time.sleep(0.05)
    return proc


def _niced(increment: int) -> Callable[[], None] | None:
    """What the child runs before ``exec``: lower its CPU priority by ``increment`` (None: 0).

    ``dagster dev`` and every process it starts (daemon, webserver, code servers, projection
    runs) inherit it, so the API is scheduled first when both want a core (CQRS_DAGSTER_NICE).
    """
    if increment <= 0:
        return None

    def lower() -> None:
        os.nice(increment)

    return lower


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            data_dir=args.data_dir,
            env=args.env,
            projection_follow_seconds=args.follow,
            projection_engine=getattr(args, "engine", None),
        )
        settings.validate_for_env()
    except SettingsError as exc:
        print(f"cqrs up: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"CQRS_{str(first['loc'][0]).upper()}" if first["loc"] else "settings"
        print(f"cqrs up: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CQRS_DATA_DIR": str(data_dir), "CQRS_ENV": settings.env}
    cqrs = [sys.executable, "-m", "cqrs_dagster.cli"]
    procs: list[subprocess.Popen[bytes]] = []
    # Before the first child starts: exec resets a handled signal to its default in the child,
    # but leaves an ignored one ignored. A shell that starts `cqrs up` in the background (a
    # script's `make run &`, nohup) ignores SIGINT, and Dagster maps SIGTERM to whatever SIGINT
    # does: dagster dev and its processes then ignored both, and every stop waited the whole
    # timeout for SIGKILL (runs and the daemon killed mid-write).
    stopping = stop_signals()
    if settings.projection_engine == "spark":
        env["CQRS_PROJECTION_ENGINE"] = "spark"
        env["CQRS_SPARK_REMOTE"] = settings.spark_remote
        try:
            sail = start_sail(settings.spark_remote, env)
        except (OSError, RuntimeError) as exc:
            print(f"cqrs up: {exc}", file=sys.stderr)
            return 2
        if sail is not None:  # first in, last out: stopped after dagster dev
            procs.append(sail)
            print(f"cqrs: Spark   {settings.spark_remote} (Sail)", flush=True)
    api_cmd = [
        *cqrs,
        "api",
        "--data-dir",
        str(data_dir),
        "--host",
        args.host,
        "--port",
        str(args.api_port),
        # The relay as a thread, not `cqrs api`'s default child process: a second Python process
        # with the bus's Arrow/ADBC stack is ~175 MB of RSS, and the whole platform idles within
        # 1.2 GB (issue 14 f). At its loads (<= 500 commands/s) the API process is far from the
        # GIL limit the child lifts (cqrs_dagster/command/relay_process.py).
        "--relay-thread",
    ]
    procs.append(subprocess.Popen(api_cmd, env=env, start_new_session=True))
    if not args.no_dagster:
        home = prepare_dagster_home(data_dir)
        dagster_env = {**env, "DAGSTER_HOME": str(home)}
        if args.follow is not None:
            dagster_env["CQRS_PROJECTION_FOLLOW_SECONDS"] = str(args.follow)
        dagster_cmd = [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-h",
            args.host,
            "-p",
            str(args.ui_port),
            "-w",
            str(home / "workspace.yaml"),
        ]
        procs.append(
            subprocess.Popen(
                dagster_cmd,
                env=dagster_env,
                start_new_session=True,
                cwd=home,
                preexec_fn=_niced(settings.dagster_nice),
            )
        )
    if args.demo:
        demo_cmd = [*cqrs, "demo", "--api", f"http://127.0.0.1:{args.api_port}"]
        procs.append(subprocess.Popen(demo_cmd, env=env, start_new_session=True))

    try:
        if _wait_http(f"http://127.0.0.1:{args.api_port}/api/v1/healthz", 60, procs, stopping):
            print(f"cqrs: API     http://{args.host}:{args.api_port}/docs", flush=True)
        if not args.no_dagster and _wait_http(
            f"http://127.0.0.1:{args.ui_port}/server_info", 180, procs, stopping
        ):
            print(f"cqrs: Dagster http://{args.host}:{args.ui_port}", flush=True)
        print(f"cqrs: data in {data_dir}; Ctrl-C stops everything", flush=True)
        while not stopping():
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f"cqrs: a child exited ({dead[0].args!r}); stopping", file=sys.stderr)
                return 1
            time.sleep(0.3)
        return 0
    finally:
        tree = {pid for p in procs for pid in descendants(p.pid)}
        for p in reversed(procs):
            if stop_process_tree(p, extra_pids=tree):
                argv = [str(a) for a in p.args] if isinstance(p.args, list) else [str(p.args)]
                name = " ".join([Path(argv[0]).name, *argv[1:4]])
                print(
                    f"cqrs: {name} did not stop within 15 s of SIGTERM: killed",
                    file=sys.stderr,
                    flush=True,
                )
        print("cqrs: stopped", flush=True)
