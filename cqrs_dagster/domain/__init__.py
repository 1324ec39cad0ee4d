"""Pure domain: commands, events, aggregates, upcasters. No I/O, no Dagster."""
