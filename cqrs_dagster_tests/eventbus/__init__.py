"""Tests: eventbus."""
