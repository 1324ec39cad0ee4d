# CPU per LocalEventBus.send, by events per send, on a worker thread (as the relay sends), in a
# fresh log per size; TREE=<checkout> picks the code. Prints events/s and CPU us per send.
# Run: TREE=$PWD .venv/bin/python bench/experiments/bus_send.py
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("TREE", str(Path(__file__).resolve().parents[2])))


def main() -> None:
    from cqrs_bench.catch_up import backlog
    from cqrs_dagster.eventbus.local import LocalEventBus

    events = list(backlog(40_000))
    out = {}
    for size in (1, 40, 1000):
        folder = Path(tempfile.mkdtemp())
        bus = LocalEventBus(folder / "bus.sqlite", 4)
        n = 4_000 if size == 1 else 40_000
        wall, cpu = time.perf_counter(), time.thread_time()
        for i in range(0, n, size):
            bus.send(events[i : i + size])
        out[size] = (
            round(n / (time.perf_counter() - wall)),
            round((time.thread_time() - cpu) / (n // size) * 1e6),
        )
        bus.close()
        shutil.rmtree(folder)
    print("events per send -> (events/s, CPU us per send):", out)


if __name__ == "__main__":
    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
