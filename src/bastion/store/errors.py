"""Errors the store raises; each is a ``BastionError`` (exit code 2: the result is incomplete)."""

from __future__ import annotations

from bastion.core.errors import BastionError


class StoreError(BastionError):
    """The database is unreachable, invalid, or refused a read or a write.

    The message is one line naming the URL (never its password) and the reason.
    """


class RunNotFound(StoreError):
    """No stored run matches a reference (an id, a unique prefix of one, or ``latest``).

    Attributes:
        ref: the reference as given.
    """

    def __init__(self, message: str, ref: str) -> None:
        self.ref = ref
        super().__init__(message)


class AmbiguousRun(StoreError):
    """An id prefix matches more than one stored run.

    Attributes:
        ref: the prefix as given.
        candidates: the ids it matches (newest first, at most a handful).
    """

    def __init__(self, message: str, ref: str, candidates: list[str]) -> None:
        self.ref = ref
        self.candidates = list(candidates)
        super().__init__(message)


class StoreBusy(StoreError):
    """The write would have to wait for a lock another connection holds; nothing was written."""
