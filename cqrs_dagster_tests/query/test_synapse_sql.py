"""The Synapse serverless T-SQL views in sql/synapse, checked as text against the local views.

Covers: one CREATE OR ALTER VIEW per read model, each reading its own Delta folder through
OPENROWSET(BULK ..., DATA_SOURCE = 'cqrs_delta', FORMAT = 'DELTA'); the setup script points that
data source at the $(DeltaRoot) sqlcmd variable with a managed-identity credential; each view's
SELECT list and WITH (explicit schema) list equal the local view's SELECT list and the Arrow
schema, column for column, with T-SQL types matching the Arrow types; deploy.sql includes every
script in order; no view hard-codes a storage location.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from cqrs_dagster.projections.schemas import READ_MODELS, SCHEMAS
from cqrs_dagster.query.views import view_sql

SYNAPSE = Path(__file__).resolve().parents[2] / "sql" / "synapse"


def _views() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(SYNAPSE.glob("[12]*.sql")):  # 30_*: the reference names over these
        match = re.search(r"CREATE OR ALTER VIEW dbo\.(\w+)\s", path.read_text())
        assert match, f"{path.name} creates no view"
        out[match.group(1)] = path.read_text()
    return out


def _names(block: str) -> list[str]:
    """Column names of a comma-separated select list: the alias after a final AS, else the
    first word of the entry, unquoted; `--` comments are dropped first."""
    block = re.sub(r"--[^\n]*", "", block)
    names = []
    for entry in (e.strip() for e in block.split(",")):
        if not entry:
            continue
        alias = re.search(r"\bAS\s+(\S+)$", entry, re.I)
        names.append((alias.group(1) if alias else re.split(r"\s+", entry)[0]).strip('[]"'))
    return names


def _tsql_select(text: str) -> list[str]:
    match = re.search(r"\bSELECT\b(.*?)\bFROM OPENROWSET\(", text, re.S)
    assert match
    return _names(match.group(1))


def _tsql_with(text: str) -> list[tuple[str, str]]:
    match = re.search(r"\)\s*WITH \((.*?)\n\) AS \w+;", text, re.S)
    assert match
    entries = re.split(r",\n", match.group(1))
    return [
        (parts[0].strip("[]"), parts[1])
        for parts in (re.split(r"\s+", e.strip(), maxsplit=1) for e in entries)
    ]


def _local_select(name: str) -> list[str]:
    match = re.search(r"\bSELECT\b(.*?)\bFROM\b", view_sql(name), re.S)
    assert match
    return _names(match.group(1))


def _tsql_type(arrow: pa.DataType) -> str:
    if pa.types.is_string(arrow):
        return "VARCHAR"
    if pa.types.is_int64(arrow):
        return "BIGINT"
    if pa.types.is_int32(arrow):
        return "INT"
    if pa.types.is_decimal(arrow):
        return f"DECIMAL({arrow.precision}, {arrow.scale})"
    if pa.types.is_timestamp(arrow):
        return "DATETIME2"
    if pa.types.is_date32(arrow):
        return "DATE"
    raise AssertionError(f"no T-SQL type for {arrow}")


def test_every_read_model_has_a_synapse_view() -> None:
    assert sorted(_views()) == sorted(READ_MODELS)


@pytest.mark.parametrize("name", READ_MODELS)
def test_view_reads_its_delta_folder_through_the_data_source(name: str) -> None:
    text = _views()[name]
    openrowset = re.search(r"OPENROWSET\((.*?)\)", text, re.S)
    assert openrowset
    args = " ".join(openrowset.group(1).split())
    assert args == f"BULK '{name}/', DATA_SOURCE = 'cqrs_delta', FORMAT = 'DELTA'"
    assert "://" not in text and "$(" not in text  # the location lives only in the setup


@pytest.mark.parametrize("name", READ_MODELS)
def test_view_columns_equal_the_local_view_and_the_schema(name: str) -> None:
    text = _views()[name]
    schema = SCHEMAS[name]
    assert _tsql_select(text) == _local_select(name) == schema.names
    declared = _tsql_with(text)
    assert [col for col, _ in declared] == schema.names
    for col, tsql in declared:
        assert tsql.startswith(_tsql_type(schema.field(col).type)), (col, tsql)
        if tsql.startswith("VARCHAR"):
            assert tsql.endswith("COLLATE Latin1_General_100_BIN2_UTF8"), col


def test_setup_points_the_data_source_at_the_delta_root_parameter() -> None:
    text = (SYNAPSE / "00_setup.sql").read_text()
    assert "CREATE DATABASE SCOPED CREDENTIAL cqrs_delta_identity" in text
    assert "WITH IDENTITY = 'Managed Identity'" in text
    source = re.search(r"CREATE EXTERNAL DATA SOURCE cqrs_delta\s+WITH \((.*?)\);", text, re.S)
    assert source
    options = " ".join(source.group(1).split())
    assert options == "LOCATION = '$(DeltaRoot)', CREDENTIAL = cqrs_delta_identity"


def test_deploy_includes_every_script_in_order() -> None:
    included = re.findall(r"^:r (\S+)$", (SYNAPSE / "deploy.sql").read_text(), re.M)
    scripts = sorted(p.name for p in SYNAPSE.glob("[0-9]*.sql"))
    assert included == scripts
    assert scripts[0] == "00_setup.sql"


def test_each_view_is_its_own_batch() -> None:
    for name, text in _views().items():
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        assert body.strip().startswith(f"CREATE OR ALTER VIEW dbo.{name}"), name
        assert body.strip().endswith("GO"), name
        assert body.count("\nGO") == 1, name
