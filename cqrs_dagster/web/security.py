"""API keys with roles, and a per-key token-bucket rate limit.

Keys come from ``Settings.api_keys`` (``CQRS_API_KEYS="key1:writer,key2:reader,key3:admin"``) and are
sent in ``X-API-Key`` or ``Authorization: Bearer``. Roles nest: a reader may read, a writer may
also send commands, an admin may do everything. Only SHA-256 digests of the keys are kept; a caller
is named by a short digest prefix (``apikey-1a2b3c4d``), so no key reaches logs, events or errors.

With no keys configured the API runs open (with a WARNING); ``check_bind`` refuses that on any
host but loopback. The rate limit (``CQRS_RATE_LIMIT_PER_SECOND`` per key) applies only when keys
are configured: the open, loopback-only developer mode never throttles (a local load test of the
shipped defaults sees no 429).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cqrs_dagster.settings import Settings

from .problems import ProblemError, problem_responses

Role = Literal["reader", "writer", "admin"]
ROLE_RANK: dict[str, int] = {"reader": 1, "writer": 2, "admin": 3}
API_KEY_HEADER = "X-API-Key"

log = logging.getLogger(__name__)

# Documented in OpenAPI as security schemes; auto_error=False so that we answer with problem+json.
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")

# Error responses every protected route can add to its OpenAPI ``responses``.
AUTH_RESPONSES = problem_responses(401, 403, 429)


class SecurityConfigError(ValueError):
    """The security settings are invalid or unsafe for how the API is being started."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's public name (never the key) and its role."""

    id: str
    role: Role

    def allows(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(raw: str | None) -> dict[str, Role]:
    """``"k1:writer,k2:reader"`` -> {sha256(k): role}. Errors name the entry, never the key."""
    keys: dict[str, Role] = {}
    for n, entry in enumerate((raw or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, role = entry.rpartition(":")
        key, role = key.strip(), role.strip()
        if not sep or not key:
            raise SecurityConfigError(f"CQRS_API_KEYS entry {n} is not in the form key:role")
        if role not in ROLE_RANK:
            raise SecurityConfigError(
                f"CQRS_API_KEYS entry {n} has unknown role {role!r} (use reader, writer or admin)"
            )
        digest = _digest(key)
        if digest in keys and keys[digest] != role:
            raise SecurityConfigError(f"CQRS_API_KEYS entry {n} repeats a key with another role")
        keys[digest] = cast(Role, role)  # checked against ROLE_RANK above
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve without API keys on anything but a loopback address."""
    keys = parse_api_keys(settings.api_keys.get_secret_value() if settings.api_keys else None)
    if not keys and not is_loopback(host):
        raise SecurityConfigError(
            f"refusing to serve on {host} without API keys: set CQRS_API_KEYS=key:role,... "
            "or bind to 127.0.0.1"
        )


class TokenBucket:
    """Per-name token buckets: ``rate`` tokens/s refill, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def take(self, name: str) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate


class ApiSecurity:
    """Authenticates keys, checks roles and applies the rate limit."""

    def __init__(
        self,
        keys: Mapping[str, Role],
        *,
        rate_per_second: float = 200.0,
        burst: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = dict(keys)
        self.limiter = TokenBucket(rate_per_second, burst, clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiSecurity:
        raw = settings.api_keys.get_secret_value() if settings.api_keys else None
        security = cls(
            parse_api_keys(raw),
            rate_per_second=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
        if security.open:
            log.warning(
                "CQRS_API_KEYS is not set: the API is OPEN (no authentication). "
                "Only serve it on a loopback address."
            )
        return security

    @property
    def open(self) -> bool:
        return not self._keys

    def authenticate(self, presented: str | None, client: str) -> Principal:
        """The caller's principal; 401 problem for a missing or unknown key."""
        if self.open:
            return Principal(f"anonymous@{client}", "admin")
        if not presented:
            raise _unauthorized("send an API key in the X-API-Key or Authorization: Bearer header")
        # Look up the digest: timing depends on the digest, not on how much of a key matches.
        digest = _digest(presented)
        role = self._keys.get(digest)
        if role is None:
            log.info("rejected an unknown API key from %s", client)
            raise _unauthorized("the API key is not valid")
        return Principal(f"apikey-{digest[:8]}", role)

    def authorize(self, principal: Principal, role: Role) -> None:
        if not principal.allows(role):
            log.info("%s (role %s) denied: needs %s", principal.id, principal.role, role)
            raise ProblemError(
                403,
                "forbidden",
                f"this operation needs the {role} role; the key has {principal.role}",
            )

    def throttle(self, principal: Principal) -> None:
        """429 problem when ``principal``'s key is over its rate; never in open (no-key) mode."""
        if self.open:
            return
        wait = self.limiter.take(principal.id)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ProblemError(
                429,
                "rate-limited",
                f"rate limit exceeded; retry after {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )

    def admit(self, presented: str | None, client: str, role: Role) -> Principal:
        """Authenticate, authorize for ``role`` and rate-limit one request (401/403/429)."""
        principal = self.authenticate(presented, client)
        self.authorize(principal, role)
        self.throttle(principal)
        return principal


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="cqrs-dagster"'}
    )


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``X-API-Key``, else an ``Authorization: Bearer`` token.

    The same reading as the FastAPI security schemes below (``APIKeyHeader``, ``HTTPBearer``
    with ``auto_error=False``), for hosts that serve a route without FastAPI's dependencies.
    """
    api_key = headers.get(API_KEY_HEADER)
    if api_key:
        return api_key
    authorization = headers.get("Authorization")
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials or scheme.lower() != "bearer":
        return None
    return credentials


def require_role(role: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the caller's :class:`Principal`, if its key has ``role`` or above.

    Raises 401 (no or unknown key), 403 (role too low) or 429 (rate limit), as problem+json.
    Needs ``app.state.security`` (an :class:`ApiSecurity`), which ``build_app`` sets.
    """

    async def dependency(
        request: Request,
        api_key: Annotated[str | None, Depends(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        security: ApiSecurity = request.app.state.security
        client = request.client.host if request.client else "unknown"
        presented = api_key or (bearer.credentials if bearer else None)
        return security.admit(presented, client, role)

    dependency.__name__ = f"require_{role}"
    return dependency
