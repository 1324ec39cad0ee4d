"""Domain errors. Each carries a stable ``code``; the HTTP layer maps them to problem+json."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a command was understood but cannot be applied."""

    code = "domain-error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AggregateNotFound(DomainError):
    """The command targets an aggregate that does not exist (HTTP 404)."""

    code = "not-found"


class InvalidTransition(DomainError):
    """The command is not allowed in the aggregate's current state (HTTP 409)."""

    code = "invalid-transition"


class AlreadyExists(DomainError):
    """A create command names an id that is already taken (HTTP 409)."""

    code = "already-exists"


class VersionConflict(DomainError):
    """The aggregate changed since the version the command expected (HTTP 409)."""

    code = "version-conflict"


class DuplicateCommand(DomainError):
    """A command id was recorded concurrently by another writer."""

    code = "duplicate-command"
