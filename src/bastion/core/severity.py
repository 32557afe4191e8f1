"""Severities, ordered, and the ``--fail-on`` gate."""

from __future__ import annotations

from enum import Enum


class Severity(str, Enum):
    """How bad a finding is, ordered ``info < low < medium < high < critical``."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the order, 0 for ``info`` to 4 for ``critical``."""
        return _ORDER.index(self)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_ORDER = [Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]

#: Values ``--fail-on`` accepts: every severity, plus ``none`` (never fail on findings).
FAIL_ON_CHOICES: tuple[str, ...] = (*(s.value for s in _ORDER), "none")


def gates(severity: Severity, fail_on: str) -> bool:
    """Whether a finding of ``severity`` trips the gate ``fail_on``.

    Args:
        severity: the finding's severity.
        fail_on: one of ``FAIL_ON_CHOICES``; ``"none"`` never trips.

    Raises:
        ValueError: ``fail_on`` is not one of ``FAIL_ON_CHOICES``.
    """
    if fail_on == "none":
        return False
    if fail_on not in FAIL_ON_CHOICES:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON_CHOICES)}, got {fail_on!r}")
    return severity >= Severity(fail_on)
