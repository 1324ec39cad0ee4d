"""Tests for cqrs-dagster; the tree mirrors the package."""
