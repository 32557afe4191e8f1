"""Plain record classes: a dataclass's ``__repr__`` and ``__eq__`` without ``dataclasses``.

``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``: ~5 ms of a process's
start-up) and builds each class's methods from source text when the class is created. The
records every ``bastion scan`` creates (the scan engine's, the pickle emulator's) subclass these
instead and write their ``__init__`` out, listing their fields in ``_fields`` (in order).
"""

from __future__ import annotations

__all__ = ["PlainRecord", "PlainValue"]


class PlainValue:
    """A record class with the ``__repr__`` of a dataclass over ``_fields``."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__qualname__}({inner})"


class PlainRecord(PlainValue):
    """A :class:`PlainValue` equal to another of its class with equal fields (a dataclass's ``__eq__``)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass
