"""Lazy public names for a package (PEP 562): each loads from its module on first access.

A package keeps its ``TYPE_CHECKING`` imports (for type checkers and readers), a map from each
public name to the module that defines it, and two lines::

    __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())

Imports nothing but the standard library, so any package may use it without weight.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_names(
    package: str, where: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy public names.

    Args:
        package: the package's dotted name (for the error message).
        where: public name -> dotted name of the module that defines it.
        namespace: the package's ``globals()``; a loaded name is cached there, so the next
            access does not come back to ``__getattr__``.

    Returns:
        ``(__getattr__, __dir__)``: the first loads and returns a name of ``where`` and raises
        ``AttributeError`` for any other; the second lists the loaded names and those of ``where``.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
