"""Regular expressions compiled on first use.

``re.compile`` runs the pattern compiler in Python: 0.1 to 1 ms a pattern here. A module imported
by every ``bastion scan`` that compiles patterns for inputs most scans never see (protocol-0
opcodes, torch archives, terminal control characters) pays for them at each start; a
:class:`LazyPattern` pays when, and if, it is first used.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

__all__ = ["LazyPattern"]

AnyStr = TypeVar("AnyStr", str, bytes)


class LazyPattern(Generic[AnyStr]):
    """``re.compile(pattern, flags)``, compiled the first time it is used.

    Offers the methods the scanner uses (``search``, ``match``, ``fullmatch``, ``finditer``,
    ``findall``, ``split``, ``sub``); :meth:`compiled` gives the compiled pattern itself.
    """

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: AnyStr, flags: int = 0) -> None:
        self._pattern: AnyStr = pattern
        self._flags: int = flags
        self._compiled: re.Pattern[AnyStr] | None = None

    def compiled(self) -> re.Pattern[AnyStr]:
        """The compiled pattern (compiled now if it was not yet)."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(self._pattern, self._flags)
        return compiled

    @property
    def pattern(self) -> AnyStr:
        """The pattern's source."""
        return self._pattern

    def search(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        """``re.Pattern.search``."""
        return (self._compiled or self.compiled()).search(string, pos, endpos)

    def match(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        """``re.Pattern.match``."""
        return (self._compiled or self.compiled()).match(string, pos, endpos)

    def fullmatch(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        """``re.Pattern.fullmatch``."""
        return (self._compiled or self.compiled()).fullmatch(string, pos, endpos)

    def finditer(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> Any:
        """``re.Pattern.finditer``."""
        return (self._compiled or self.compiled()).finditer(string, pos, endpos)

    def findall(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> list[Any]:
        """``re.Pattern.findall``."""
        return (self._compiled or self.compiled()).findall(string, pos, endpos)

    def sub(self, repl: Any, string: AnyStr, count: int = 0) -> AnyStr:
        """``re.Pattern.sub``."""
        return (self._compiled or self.compiled()).sub(repl, string, count)

    def split(self, string: AnyStr, maxsplit: int = 0) -> list[Any]:
        """``re.Pattern.split``."""
        return (self._compiled or self.compiled()).split(string, maxsplit)
