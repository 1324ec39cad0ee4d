"""``cqrs provision``: create the Cosmos DB database and containers, once per deployment."""

from __future__ import annotations

import argparse
import sys

from cqrs_dagster.settings import SettingsError, load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "provision",
        help="create the Cosmos DB database and containers (CQRS_ENV=azure)",
        description=(
            "Create the Cosmos DB database CQRS_COSMOS_DATABASE and its containers (customers, "
            "orders: partition key /id, an indexing policy without the state, commandResults "
            "and pending paths; leases: the change-feed relay's continuations). Idempotent. "
            "Uses CQRS_COSMOS_KEY if set, else Entra ID (DefaultAzureCredential)."
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        if settings.env != "azure":
            print("cqrs provision: nothing to do for CQRS_ENV=local (SQLite creates its tables)")
            return 0
        from cqrs_dagster.wiring import provision_cosmos

        names = provision_cosmos(settings)
    except SettingsError as exc:
        print(f"cqrs provision: {exc}", file=sys.stderr)
        return 2
    print(
        f"cqrs provision: Cosmos DB database {settings.cosmos_database!r}: "
        f"containers {', '.join(names)} ready"
    )
    return 0
