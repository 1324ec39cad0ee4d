"""Where a read-model table lives: a folder on this machine, or Azure storage.

The deltalake storage options for the configured root (one authentication method, chosen from the
``CQRS_STORAGE_*`` settings) are derived by :func:`cqrs_dagster.settings.delta_storage_options`,
next to the settings themselves, so that ``Settings.validate_for_env`` checks them at start-up
without importing the projections; :func:`cqrs_dagster.wiring.make_table_store` hands them to the
:class:`~cqrs_dagster.projections.tables.TableStore`.
"""

from __future__ import annotations

from cqrs_dagster.settings import is_local_root

__all__ = ["is_local_root"]
