"""Tests: quality rules and table maintenance."""
