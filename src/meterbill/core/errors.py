"""Domain errors raised by services; each API family renders them in its own wire shape."""

from __future__ import annotations


class DomainError(Exception):
    """Base class. `param` names the offending input field when there is one."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFound(DomainError):
    pass


class InvalidInput(DomainError):
    pass


class Duplicate(DomainError):
    pass


class Conflict(DomainError):
    """A concurrent or stale write (optimistic locking)."""


class InvalidState(DomainError):
    """The operation is not allowed in the resource's current state."""


class AuthenticationFailed(DomainError):
    pass


class Forbidden(DomainError):
    pass


class PayloadTooLarge(DomainError):
    pass
