"""Tests of the alerting core: transitions, delivery state, sinks."""
