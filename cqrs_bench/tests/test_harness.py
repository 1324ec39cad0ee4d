"""The benchmark harness and the peer stay runnable. They need the bench extra (matplotlib,
eventsourcing), so `make bench` runs them before the benchmarks and `make test` does not."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from cqrs_bench import Measurement, Ratio, Report, Series, Target, summary
from cqrs_bench.peer import command_rate, projection_rate
from cqrs_bench.results import write


def test_target_and_ratio_verdicts_land_in_the_json_and_plot(tmp_path: Path) -> None:
    report = Report(
        "demo",
        measurements=[
            Measurement("ours", "commands/s", [10.0, 30.0, 20.0], Target(">=", 15), key="a"),
            Measurement("peer", "commands/s", [4.0, 6.0, 5.0]),
            Measurement("p99", "ms", [60.0], Target("<=", 50), key="b"),
        ],
        ratios=[Ratio("ours", "peer", Target(">=", 4), key="a")],
        series=[Series("lat", "latency", "t", "ms", {"run": [(0.0, 1.0), (1.0, 2.0)]})],
    )
    paths = write("demo", report, tmp_path)
    body = json.loads((tmp_path / "demo.json").read_text())
    ours, _peer, p99 = body["measurements"]
    assert (ours["median"], ours["met"], p99["met"]) == (20.0, True, False)
    assert body["ratios"][0]["value"] == 4.0 and body["ratios"][0]["met"] is True
    assert body["machine"]["cpus"] >= 1
    png = tmp_path / "demo-lat.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MISSED" in report.render() and "MET" in report.render()


def test_peer_creates_and_projects_every_order(tmp_path: Path) -> None:
    assert command_rate(tmp_path / "commands", 20) > 0
    assert projection_rate(tmp_path / "projection", 30) > 0
    # projection_rate raises unless its view counted all 30 orders; check the file it left too.
    with sqlite3.connect(tmp_path / "projection" / "peer-view.sqlite") as conn:
        (count,) = conn.execute("SELECT SUM(order_count) FROM order_summary").fetchone()
        totals = [Decimal(t) for (t,) in conn.execute("SELECT total_amount FROM order_summary")]
    assert count == 30 and sum(totals) == Decimal("21.10") * 30


def test_summary_rewrites_only_the_marked_table(tmp_path: Path) -> None:
    report = Report(
        "demo",
        measurements=[Measurement("p99", "ms", [60.0, 40.0, 70.0], Target("<=", 50), key="b")],
        command="make bench",
    )
    write("write_side", report, tmp_path)
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{summary.START}\nold table\n{summary.END}\noutro\n")
    summary.update(doc, summary.table(summary.load(tmp_path)))
    text = doc.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| b | write_side | p99 | 60 ms | 40-70 | <= 50 | **missed** |" in text
    assert "`write_side`: `make bench`" in text


def test_cpu_thief_takes_its_share_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    from cqrs_bench.cpu_thief import cpu_thief, thief_share

    def cpu_seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    monkeypatch.setenv("BENCH_CPU_THIEF", "0.3")
    assert thief_share() == 0.3
    with cpu_thief(thief_share()) as pids:
        assert len(pids) == (os.cpu_count() or 1)
        time.sleep(0.5)  # the interpreters start
        before = {pid: cpu_seconds(pid) for pid in pids}
        time.sleep(2.0)
        shares = [(cpu_seconds(pid) - before[pid]) / 2.0 for pid in pids]
    # 30% of each core asked; a shared machine may give less, and never much more.
    assert all(0.1 < share < 0.5 for share in shares), shares
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    monkeypatch.setenv("BENCH_CPU_THIEF", "1.5")
    with pytest.raises(ValueError, match="BENCH_CPU_THIEF"):
        thief_share()
    with cpu_thief(0.0) as none:
        assert none == []


def test_window_maxima_show_a_single_spike() -> None:
    from cqrs_bench.end_to_end import Load, _maxima_text, window_maxima

    load = Load()
    for i in range(30):  # one order a second for 30 s, 2 s to visibility, one of them 5 s
        order = f"o{i}"
        load.accepted[order] = 100.0 + i
        load.visible[order] = 100.0 + i + (5.0 if i == 14 else 2.0 + i / 100)
    load.accepted["unseen"] = 131.0  # never visible: not counted
    assert window_maxima(load) == pytest.approx([2.09, 5.0, 2.29])
    assert "median 2.29 s, the two highest 5.00 and 2.29 s (3 windows)" in _maxima_text(load)
    assert _maxima_text(Load()) == "no order seen"


def test_read_your_writes_pairs_run_abba_and_report_medians(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cqrs_bench.end_to_end import (
        Load,
        Mode,
        Run,
        _latency_measurements,
        _runs_notes,
        run_order,
        ryw_pairs,
    )

    assert run_order(1) == [False, True]
    assert run_order(3) == [False, True, True, False, False, True]
    monkeypatch.delenv("BENCH_E2E_PAIRS", raising=False)
    monkeypatch.delenv("BENCH_FULL", raising=False)
    assert ryw_pairs() == 1
    monkeypatch.setenv("BENCH_FULL", "1")
    assert ryw_pairs() == 3
    monkeypatch.setenv("BENCH_E2E_PAIRS", "0")
    with pytest.raises(ValueError, match="BENCH_E2E_PAIRS"):
        ryw_pairs()

    def run(seconds_to_visible: float) -> Run:  # 10 orders, one a second, all alike
        load = Load(start=100.0, last_accept=110.0)
        for i in range(10):
            load.accepted[f"o{i}"] = 100.0 + i + 1
            load.visible[f"o{i}"] = 100.0 + i + 1 + seconds_to_visible
        return Run(load=load)

    mode = Mode("m", None, readers=5)
    mode.plain_runs = [run(2.0), run(3.0), run(2.5)]
    mode.waited_runs = [run(2.2), run(4.0), run(2.4)]
    maxima = _latency_measurements("m", [r.load for r in mode.waited_runs], 1.0)[2]
    assert maxima.values == pytest.approx([2.2, 4.0, 2.4])
    assert maxima.median == pytest.approx(2.4)  # one slow run does not decide it
    notes = _runs_notes(mode, 1.0)
    assert "load runs in the order without, with, with, without, without, with readers" in notes[0]
    # the second run is the first with the readers, the third the second with them (ABBA)
    assert notes[2].startswith("m: load run 2 of 6 (with readers)") and "max 2.20 s" in notes[2]
    assert notes[3].startswith("m: load run 3 of 6 (with readers)") and "max 4.00 s" in notes[3]
    assert notes[-1] == "m: max with / without the readers, pair by pair: 1.10, 1.33, 0.96"
    assert _runs_notes(Mode("m", None), 1.0) == []
