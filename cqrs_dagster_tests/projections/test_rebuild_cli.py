"""``cqrs rebuild``: progress bar on stderr, the result on stdout, exit 0 when swapped in, 1 with
a clear message when the rebuild differs from live (nothing swapped), 0 again with --force,
``--rollback`` puts back the version before the swap, and 2 for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from cqrs_dagster.cli import main
from cqrs_dagster.projections.schemas import ORDERS
from cqrs_dagster.projections.tables import TableStore

from .scenario import new_bus
from .test_rebuild import corrupt, project_all, seed


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    bus = new_bus(tmp_path / "bus.sqlite")
    seed(bus)
    project_all(bus, TableStore(root=str(tmp_path / "data" / "delta")))
    return tmp_path / "data"


def test_rebuild_prints_progress_and_switches(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["rebuild", "orders", "--data-dir", str(data_dir), "--batch-size", "20"])
    out, err = capsys.readouterr()
    assert code == 0
    bar = err.split("\r")[-1]
    assert bar.startswith("orders [" + "#" * 30 + "] 100.0% ")
    assert "events" in bar and "/s" in bar
    assert "switched: True" in out and "differing_keys: 0" in out
    assert "time: " in out and "events/s" in out
    live = DeltaTable(str(data_dir / "delta" / ORDERS))
    assert f"swapped the rebuilt orders into the live table (Delta version {live.version()})" in out
    assert "roll back with: cqrs rebuild orders --rollback" in out


def test_rollback_puts_back_the_version_before_the_rebuild(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = TableStore(root=str(data_dir / "delta"))
    assert main(["rebuild", "orders", "--data-dir", str(data_dir), "--rollback"]) == 2
    assert "orders has no rebuild to roll back" in capsys.readouterr().err
    corrupt(tables)
    corrupted = DeltaTable(tables.uri(ORDERS)).to_pyarrow_table().sort_by("order_id")
    assert main(["rebuild", "orders", "--data-dir", str(data_dir), "--force"]) == 0
    assert main(["rebuild", "orders", "--data-dir", str(data_dir), "--rollback"]) == 0
    assert "rolled orders back" in capsys.readouterr().out
    assert DeltaTable(tables.uri(ORDERS)).to_pyarrow_table().sort_by("order_id") == corrupted


def test_a_differing_rebuild_exits_1_unless_forced(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = TableStore(root=str(data_dir / "delta"))
    corrupt(tables)
    code = main(["rebuild", "orders", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "switched: False" in out
    assert "differs from the live table in 2 key(s) (first: o003, o007); nothing switched" in err
    assert "--force" in err
    version = DeltaTable(tables.uri(ORDERS)).version()
    code = main(["rebuild", "orders", "--data-dir", str(data_dir), "--force"])
    out, _ = capsys.readouterr()
    assert code == 0 and "forced: True" in out
    assert DeltaTable(tables.uri(ORDERS)).version() == version + 1  # one swap commit


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "orders", "--data-dir", str(tmp_path), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    assert main(["rebuild", "orders", "--data-dir", str(tmp_path)]) == 2
    assert "orders has no live table to rebuild" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["rebuild", "raw_events", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
