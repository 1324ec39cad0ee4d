"""``cqrs sql``: read-only SQL over the read models from the command line.

Covers: table, CSV and JSON output equal the view's rows (money as decimal strings, UTC
timestamps with Z, NULL handling); every kind of write or config statement and multi-statement
input is refused with exit code 2, one line on stderr, and leaves the tables at their version;
engine errors exit 1 with one line; the installed console script works from another directory
(the view SQL is found as package data).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cqrs_dagster.cli import main
from cqrs_dagster.projections.schemas import READ_MODELS
from cqrs_dagster_tests.query.conftest import Platform

QUERY = (
    "SELECT order_id, customer_name, total_amount, created_date FROM order_summary "
    "WHERE customer_id = 'c1' ORDER BY order_id"
)


def _run(
    capsys: pytest.CaptureFixture[str], platform: Platform, *args: str
) -> tuple[int, str, str]:
    code = main(["sql", *args, "--data-dir", str(platform.settings.data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def _expected(platform: Platform) -> list[dict[str, object]]:
    summary = platform.tables.open("order_summary")
    assert summary is not None
    rows = [r for r in summary.to_pyarrow_table().to_pylist() if r["customer_id"] == "c1"]
    return sorted(rows, key=lambda r: str(r["order_id"]))


def test_json_output(capsys: pytest.CaptureFixture[str], seeded: Platform) -> None:
    code, out, err = _run(capsys, seeded, QUERY, "--format", "json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    expected = _expected(seeded)
    assert len(rows) == len(expected) == 10
    for row, exp in zip(rows, expected, strict=True):
        assert row == {
            "order_id": exp["order_id"],
            "customer_name": "Grace Hopper",
            "total_amount": str(exp["total_amount"]),
            "created_date": exp["created_date"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # type: ignore[attr-defined]
        }


def test_csv_output(capsys: pytest.CaptureFixture[str], seeded: Platform) -> None:
    code, out, _ = _run(capsys, seeded, QUERY, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["order_id"] for r in rows] == [r["order_id"] for r in _expected(seeded)]
    assert [r["total_amount"] for r in rows] == [str(r["total_amount"]) for r in _expected(seeded)]
    code, out, _ = _run(capsys, seeded, "SELECT NULL AS a, 'x,y' AS b", "--format", "csv")
    assert out == 'a,b\n,"x,y"\n'


def test_table_output(capsys: pytest.CaptureFixture[str], seeded: Platform) -> None:
    code, out, _ = _run(capsys, seeded, QUERY)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split(" | ")[0].strip() == "order_id"
    assert [c.strip() for c in lines[0].split("|")] == [
        "order_id",
        "customer_name",
        "total_amount",
        "created_date",
    ]
    assert set(lines[1]) <= {"-", "+"}
    body = lines[2:-1]
    assert [line.split("|")[0].strip() for line in body] == [
        r["order_id"] for r in _expected(seeded)
    ]
    assert lines[-1] == "(10 rows)"
    code, out, _ = _run(capsys, seeded, "SELECT NULL AS a")
    assert out.splitlines()[2] == "NULL"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO orders SELECT * FROM orders",
        "COPY orders TO 'out.csv'",
        "ATTACH 'x.db' AS x",
        "SELECT 1; DROP VIEW orders",
        "PRAGMA enable_profiling",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "DELETE FROM orders",
    ],
)
def test_writes_are_refused(capsys: pytest.CaptureFixture[str], seeded: Platform, sql: str) -> None:
    versions = {n: seeded.tables.open(n).version() for n in READ_MODELS}  # type: ignore[union-attr]
    code, out, err = _run(capsys, seeded, sql)
    assert code == 2
    assert out == ""
    assert err.startswith("cqrs sql: refused: only ")
    assert err.count("\n") == 1
    assert {n: seeded.tables.open(n).version() for n in READ_MODELS} == versions  # type: ignore[union-attr]


def test_engine_errors_are_one_line(capsys: pytest.CaptureFixture[str], seeded: Platform) -> None:
    code, out, err = _run(capsys, seeded, "SELECT no_such_column FROM orders")
    assert code == 1 and out == ""
    assert err.startswith("cqrs sql: ") and "no_such_column" in err
    assert err.count("\n") == 1


def test_console_script_from_another_directory(seeded: Platform, tmp_path: Path) -> None:
    cqrs = Path(sys.executable).parent / "cqrs"
    done = subprocess.run(
        [str(cqrs), "sql", "SELECT count(*) AS n FROM order_summary", "--format", "json"],
        cwd=tmp_path,
        env={"CQRS_DATA_DIR": str(seeded.settings.data_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 60}]
