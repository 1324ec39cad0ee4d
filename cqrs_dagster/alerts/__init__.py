"""Alerts on read-model health: the pure transition logic and the delivery sinks (no Dagster)."""
