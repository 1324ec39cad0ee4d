"""Write a benchmark :class:`Report` as JSON plus one PNG per :class:`Series`, and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import RESULTS_DIR, ROOT, Report, Series, full_mode

PACKAGES = ("dagster", "deltalake", "duckdb", "pyarrow", "fastapi", "uvicorn", "eventsourcing")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: version(p) for p in PACKAGES},
        "git_commit": commit,
        "full_mode": full_mode(),
    }


def plot(series: Series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, points in series.lines.items():
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if series.style == "scatter":
            ax.scatter(xs, ys, s=4, alpha=0.5, label=label)
        else:
            ax.plot(xs, ys, marker="o", label=label)
    for label, y in series.hlines.items():
        ax.axhline(y, linestyle="--", color="red", linewidth=1, label=label)
    if series.log_x:
        ax.set_xscale("log")
    ax.set_title(series.title)
    ax.set_xlabel(series.x_label)
    ax.set_ylabel(series.y_label)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write(name: str, report: Report, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """``<name>.json`` and ``<name>-<series>.png`` in ``results_dir``; returns the paths written."""
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for series in report.series:
        png = results_dir / f"{name}-{series.name}.png"
        plot(series, png)
        written.append(png)
    out = results_dir / f"{name}.json"
    body = {"benchmark": name, "machine": machine(), **report.as_dict()}
    out.write_text(json.dumps(body, indent=2, default=str) + "\n")
    written.append(out)
    return written
