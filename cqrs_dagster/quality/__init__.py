"""Data-quality rules over the read models (pure of Dagster): each returns a CheckOutcome."""
