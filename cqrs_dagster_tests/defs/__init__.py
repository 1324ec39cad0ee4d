"""Tests: defs."""
