# (b) A/B of two checkouts' `cqrs api` under wrk, interleaved: each variant's server runs with
# PYTHONPATH=<its checkout>, on a fresh data folder; wrk 64 connections for SECONDS after a 3 s
# warm-up, then the open loop at 1,000/s. Prints commands/s and the open loop's p99 per run and
# their medians. Needs wrk. Used for the event loop (issue 14, 12-05 midday):
#   git worktree add /tmp/uvloop 42f1598 && ln -s $PWD/.venv /tmp/uvloop/.venv
#   VARIANTS="uvloop=/tmp/uvloop;asyncio=$PWD" .venv/bin/python bench/experiments/http_ab.py
# A variant may set environment variables for its server after its tree, `+NAME=VALUE` each, e.g.
#   VARIANTS="l10=$PWD;l50=$PWD+CQRS_RELAY_LINGER_SECONDS=0.05"
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    from cqrs_bench import write_side as ws

    variants = [tuple(part.split("=", 1)) for part in os.environ["VARIANTS"].split(";")]
    settings = {name: dict(kv.split("=", 1) for kv in tree.split("+")[1:]) for name, tree in variants}
    variants = [(name, tree.split("+")[0]) for name, tree in variants]
    base = dict(os.environ)
    seconds = int(os.environ.get("SECONDS_PER_RUN", "12"))
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    p99s: dict[str, list[float]] = {name: [] for name, _ in variants}
    for r in range(int(os.environ.get("PAIRS", "4"))):
        for name, tree in variants if r % 2 == 0 else variants[::-1]:
            os.environ.clear()
            os.environ.update(base, PYTHONPATH=tree, **settings[name])
            with (
                tempfile.TemporaryDirectory() as folder,
                ws.serve(Path(folder), Path(folder) / "api.log") as port,
            ):
                ws.http_max(port, f"w{r}{name}", 3)
                summary = ws.http_max(port, f"r{r}{name}", seconds)
                latencies = ws.open_loop_latency(port, f"l{r}{name}", 1000, seconds)
            rate = summary["requests"] / summary["seconds"]
            p99 = ws._percentile([lat for _, lat, _, _ in latencies], 0.99)
            rates[name].append(rate)
            p99s[name].append(p99)
            print(f"{name} pair {r}: {rate:,.0f} commands/s, non-2xx {summary['non201']}, "
                  f"open-loop p99 {p99:.1f} ms", flush=True)  # fmt: skip
    for name, _ in variants:
        print(f"{name}: median {statistics.median(rates[name]):,.0f} commands/s "
              f"{[round(v) for v in rates[name]]}, open-loop p99 median "
              f"{statistics.median(p99s[name]):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
