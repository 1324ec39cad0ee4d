# Issue 14 experiment: finding one customer's orders in 2M orders (100 files): DuckDB's Parquet
# reader vs a pyarrow dataset scan, with and without a Parquet bloom filter on customer_id.
# Run: .venv/bin/python bench/experiments/customer_lookup.py
import time, tempfile, uuid, random, statistics, duckdb, pyarrow as pa, pyarrow.compute as pc, deltalake
from deltalake import write_deltalake, DeltaTable, WriterProperties, ColumnProperties, BloomFilterProperties
print(duckdb.__version__, deltalake.__version__)
n = 2_000_000
customers = [str(uuid.uuid4()) for _ in range(50_000)]
rnd = random.Random(1)
t = pa.table({'order_id': [f'{i:012d}-{uuid.UUID(int=rnd.getrandbits(128))}' for i in range(n)], 'customer_id': [customers[rnd.randrange(len(customers))] for _ in range(n)], 'day': [i // 20000 for i in range(n)]})
for bloom in (False, True):
    d = tempfile.mkdtemp() + '/o'
    wp = WriterProperties(column_properties={'customer_id': ColumnProperties(bloom_filter_properties=BloomFilterProperties(set_bloom_filter_enabled=True, fpp=0.01, ndv=100_000))}) if bloom else None
    s = time.perf_counter()
    write_deltalake(d, t, partition_by=['day'], writer_properties=wp)
    w = time.perf_counter() - s
    dt = DeltaTable(d)
    files = dt.file_uris()
    c = customers[7]
    ts = []; tp = []
    con = duckdb.connect()
    for i in range(5):
        s = time.perf_counter()
        r = con.execute("SELECT order_id FROM read_parquet(?) WHERE customer_id = ?", [files, c]).fetchall()
        ts.append(time.perf_counter() - s)
        s = time.perf_counter()
        r2 = dt.to_pyarrow_dataset().to_table(columns=['order_id', 'customer_id'], filter=pc.field('customer_id') == c)
        tp.append(time.perf_counter() - s)
    print('bloom', bloom, 'write', round(w, 2), 'files', len(files), 'duckdb ms', round(statistics.median(ts)*1000, 1), 'pyarrow ms', round(statistics.median(tp)*1000, 1), len(r), r2.num_rows)
