"""The HTTP hosts, above the command and the query side (which know nothing of HTTP).

- :mod:`.app`: the FastAPI app (``cqrs api``): its lifespan runs the command side, the relay thread.
- :mod:`.commands`: ``POST /api/v1/commands`` (route and ASGI fast path).
- :mod:`.queries`: the query routes over the read models.
- :mod:`.functions`: the same command API (and the relay) on Azure Functions.
- :mod:`.execution`: body decoding and command execution shared by both hosts.
- :mod:`.problems` (problem+json), :mod:`.security` (API keys, roles, rate limit),
  :mod:`.server` (uvicorn protocol).

Every adapter comes from :mod:`cqrs_dagster.wiring`.
"""
