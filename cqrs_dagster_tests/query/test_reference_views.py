"""The reference architecture's own view names, ``vw_order_summary`` and
``vw_daily_order_metrics``: in ``cqrs sql`` and ReadModels they return exactly the rows of the gold
views they name; the Synapse script creates ``dbo.vw_*`` over ``dbo.<gold view>`` with the same
columns as the local views, and deploy.sql runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cqrs_dagster.cli import main
from cqrs_dagster.projections.schemas import SCHEMAS
from cqrs_dagster.query.views import REFERENCE_VIEWS, ReadModels, view_sql
from cqrs_dagster_tests.query.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
SYNAPSE = REPO / "sql" / "synapse" / "30_reference_views.sql"


@pytest.mark.parametrize(("view", "base"), sorted(REFERENCE_VIEWS.items()))
def test_cqrs_sql_reads_the_reference_name(
    seeded: Platform, capsys: pytest.CaptureFixture[str], view: str, base: str
) -> None:
    data_dir = str(seeded.settings.data_dir)
    key = SCHEMAS[base].names[0]
    sql = "SELECT * FROM {} ORDER BY " + key
    assert main(["sql", sql.format(view), "--format", "json", "--data-dir", data_dir]) == 0
    got = json.loads(capsys.readouterr().out)
    assert main(["sql", sql.format(base), "--format", "json", "--data-dir", data_dir]) == 0
    want = json.loads(capsys.readouterr().out)
    assert got == want and len(got) > 0
    assert list(got[0]) == SCHEMAS[base].names


def test_read_models_expose_the_reference_names(seeded: Platform) -> None:
    with ReadModels(seeded.tables) as models:
        for view, base in REFERENCE_VIEWS.items():
            got = models.query(f"SELECT * FROM {view}")
            assert got.sort_by(SCHEMAS[base].names[0]) == models.query(
                f"SELECT * FROM {base}"
            ).sort_by(SCHEMAS[base].names[0])
        # only created over the gold views a ReadModels registers
    with (
        ReadModels(seeded.tables, names=("orders",)) as models,
        pytest.raises(ValueError, match="vw_order_summary"),
    ):
        models.query("SELECT * FROM vw_order_summary")


def test_synapse_creates_the_reference_names_over_the_gold_views() -> None:
    text = SYNAPSE.read_text()
    batches = [b for b in re.split(r"^GO$", text, flags=re.M) if "CREATE" in b]
    assert len(batches) == len(REFERENCE_VIEWS)
    for batch, (view, base) in zip(
        batches, sorted(REFERENCE_VIEWS.items(), reverse=True), strict=True
    ):
        assert f"CREATE OR ALTER VIEW dbo.{view}\nAS\nSELECT" in batch
        assert batch.rstrip().endswith(f"FROM dbo.{base};")
        select = re.search(r"\bSELECT\b(.*?)\bFROM\b", batch, re.S)
        local = re.search(r"\bSELECT\b(.*?)\bFROM\b", view_sql(view), re.S)
        assert select and local
        names = [c.strip() for c in select.group(1).split(",")]
        assert names == [c.strip() for c in local.group(1).split(",")] == SCHEMAS[base].names
        assert f"FROM {base};" in view_sql(view)
    deploy = (REPO / "sql" / "synapse" / "deploy.sql").read_text()
    assert deploy.rstrip().endswith(":r 30_reference_views.sql")
    assert (REPO / "sql" / "local" / "vw_order_summary.sql").read_text() == view_sql(
        "vw_order_summary"
    )
