"""Loggers that import :mod:`logging` only when a record can go somewhere.

``logging`` (with ``traceback``, ``threading``, ``string`` …) is ~5 ms of a process's start-up,
and ``bastion scan`` of a file logs nothing unless something goes wrong. :func:`get_logger`
returns a stand-in for ``logging.getLogger(name)``: any use of it imports ``logging`` and
forwards to the real logger, except a ``debug``/``info`` record while ``logging`` is not loaded
and no level below WARNING is pending: such a record goes nowhere in any case (nobody can have
set a level or a handler without importing ``logging``), so it is dropped without the import.

:func:`configure_later` is ``logging.basicConfig`` applied when ``logging`` is first used (at
once if it is loaded): the CLI's log format and level hold for the first record, however late.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import logging

__all__ = ["configure_later", "get_logger"]

_DEBUG, _INFO = 10, 20  # logging.DEBUG, logging.INFO
_pending: dict[str, Any] | None = None


def configure_later(**basic_config: Any) -> None:
    """``logging.basicConfig(**basic_config)`` now if ``logging`` is loaded, else on its first use."""
    global _pending
    if "logging" in sys.modules:
        _pending = None
        sys.modules["logging"].basicConfig(**basic_config)
    else:
        _pending = dict(basic_config)


def _real(name: str) -> logging.Logger:
    global _pending
    import logging

    if _pending is not None:
        config, _pending = _pending, None
        logging.basicConfig(**config)
    return logging.getLogger(name)


def _quiet(level: int) -> bool:
    """True when a record of ``level`` can go nowhere without ``logging`` being imported."""
    if "logging" in sys.modules:
        return False
    pending = _pending.get("level", 30) if _pending is not None else 30
    return level < (pending if isinstance(pending, int) else _DEBUG)


class _LazyLogger:
    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        if self._logger is None:
            self._logger = _real(self._name)
        return self._logger

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not _quiet(_DEBUG):
            self._get().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not _quiet(_INFO):
            self._get().info(msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return not _quiet(level) and self._get().isEnabledFor(level)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get(), attr)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, imported and looked up on first use (see the module's text)."""
    return cast("logging.Logger", _LazyLogger(name))
