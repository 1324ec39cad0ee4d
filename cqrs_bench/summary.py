"""Render ``bench/results/*.json`` as one markdown table into BENCHMARKS.md (between markers).

``python -m cqrs_bench.summary`` (``make bench`` runs it last), so the table in
BENCHMARKS.md is always the figures of the last run, with the commands that produced them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import RESULTS_DIR, ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = ("write_side", "catch_up", "read_side", "rebuild", "end_to_end", "query")


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| # | benchmark | figure | median | min-max | target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for body in results:
        bench = body["benchmark"]
        for m in body["measurements"]:
            if "median" not in m:
                continue
            lines.append(
                f"| {m['key']} | {bench} | {m['name']} | {_fmt(m['median'])} {m['unit']} "
                f"| {_fmt(m['min'])}-{_fmt(m['max'])} | {m['target'] or ''} "
                f"| {_verdict(m['met'])} |"
            )
        for r in body["ratios"]:
            lines.append(
                f"| {r['key']} | {bench} | ratio {r['numerator']} / {r['denominator']} "
                f"| {_fmt(r['value'])} | | {r['target'] or ''} | {_verdict(r['met'])} |"
            )
    commands = [f"- `{b['benchmark']}`: `{b['command']}`" for b in results]
    machine = results[0]["machine"] if results else {}
    header = (
        f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), "
        f"{machine.get('memory_gib')} GiB, Python {machine.get('python')}, "
        f"commit {machine.get('git_commit')}, "
        f"{'BENCH_FULL=1' if machine.get('full_mode') else 'quick sizes'}; "
        f"packages: {', '.join(f'{k} {v}' for k, v in machine.get('packages', {}).items())}."
    )
    return "\n".join([header, "", *lines, "", "Commands:", "", *commands])


def load(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")}
    return [found[n] for n in (*ORDER, *sorted(set(found) - set(ORDER))) if n in found]


def update(markdown: Path, rendered: str) -> None:
    text = markdown.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{markdown} lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    markdown.write_text(f"{head}{START}\n{rendered}\n{END}{tail}")


def main() -> int:
    rendered = table(load())
    update(ROOT / "BENCHMARKS.md", rendered)
    print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
