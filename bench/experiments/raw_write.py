# Time of one raw_events append (write_deltalake of 25k rows, as raw ingest commits them) by
# Parquet writer properties: the shipped ones (tables.writer_properties) against variants, each
# into its own fresh table, interleaved, on rows a real catch-up of the benchmark's backlog wrote.
# Prints the median ms per append and the bytes per row of each variant.
# Run: .venv/bin/python bench/experiments/raw_write.py
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("TREE", str(Path(__file__).resolve().parents[2])))

ROWS = 25_000
APPENDS = 8
ROUNDS = 3


def variants() -> dict[str, object]:
    from deltalake import ColumnProperties, WriterProperties

    from cqrs_dagster.projections.schemas import RAW_EVENTS
    from cqrs_dagster.projections.tables import PLAIN_ENCODED, writer_properties

    plain = PLAIN_ENCODED[RAW_EVENTS]
    big = ("data", "metadata", "correlation_id", "causation_id", "offset", "aggregate_id")

    def props(**kw: object) -> object:
        cols = {c: ColumnProperties(dictionary_enabled=False) for c in plain}
        for c in big:
            cols[c] = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
        return WriterProperties(compression="SNAPPY", column_properties=cols, **kw)

    return {
        "shipped": writer_properties(RAW_EVENTS),
        "no stats on big columns": props(),
        "lz4_raw": WriterProperties(
            compression="LZ4_RAW",
            column_properties={c: ColumnProperties(dictionary_enabled=False) for c in plain},
        ),
        "chunk stats only": WriterProperties(
            compression="SNAPPY",
            column_properties={c: ColumnProperties(dictionary_enabled=False) for c in plain},
            default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
        ),
    }


def main() -> None:
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from cqrs_bench.catch_up import PARTITIONS, backlog
    from cqrs_dagster.eventbus.local import LocalEventBus
    from cqrs_dagster.projections.context import StepContext
    from cqrs_dagster.projections.pipeline import catch_up
    from cqrs_dagster.projections.schemas import RAW_EVENTS, SCHEMAS
    from cqrs_dagster.projections.tables import PARTITION_BY, TableStore
    from cqrs_dagster.settings import load_settings
    from cqrs_dagster.wiring import make_engine

    work = Path(tempfile.mkdtemp())
    try:
        bus = LocalEventBus(work / "bus.sqlite", partition_count=PARTITIONS)
        events = list(backlog(ROWS * APPENDS))
        for i in range(0, len(events), 5_000):
            bus.send(events[i : i + 5_000])
        engine = make_engine(load_settings(projection_engine="duckdb"))
        tables = TableStore(root=str(work / "delta"))
        catch_up(StepContext(tables, "x", engine=engine), bus, max_events=len(events))
        bus.close()
        engine.close()
        rows = DeltaTable(str(work / "delta" / RAW_EVENTS)).to_pyarrow_table()
        rows = rows.sort_by("ingest_seq").cast(SCHEMAS[RAW_EVENTS])
        times: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for r in range(ROUNDS):
            for name, props in variants().items():
                target = work / f"t{r}-{abs(hash(name))}"
                for k in range(APPENDS):
                    part: pa.Table = rows.slice(k * ROWS, ROWS)
                    t = time.perf_counter()
                    write_deltalake(
                        str(target), part, mode="append",
                        partition_by=PARTITION_BY.get(RAW_EVENTS), writer_properties=props,
                    )  # fmt: skip
                    if k:  # the first append creates the table
                        times.setdefault(name, []).append(time.perf_counter() - t)
                sizes[name] = sum(f.stat().st_size for f in target.rglob("*.parquet"))
                shutil.rmtree(target)
        for name, ts in times.items():
            print(
                f"{name:28s} {statistics.median(ts) * 1e3:7.1f} ms per append "
                f"(min {min(ts) * 1e3:.1f})  {sizes[name] / rows.num_rows:6.1f} bytes/row"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
