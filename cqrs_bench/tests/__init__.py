"""Tests of the benchmark harness and the peer (they need the bench extra); `make bench` runs
them before the benchmarks."""
